package control

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"syscall"
	"time"
)

// Client talks to a control server over its Unix socket.
type Client struct {
	Path string
	http *http.Client
}

// NewClient returns a client for the socket at path. No connection is
// made until the first request.
func NewClient(path string) *Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
		MaxIdleConns:    2,
		IdleConnTimeout: 30 * time.Second,
	}
	return &Client{Path: path, http: &http.Client{Transport: tr}}
}

// Error is an error reply from the server.
type Error struct {
	Status int
	Code   string
	Msg    string
}

func (e *Error) Error() string { return e.Msg }

// ErrNoDaemon is returned (wrapped in *DownError) when nothing listens on
// the socket.
var ErrNoDaemon = errors.New("no control socket")

// DownError says the daemon could not be reached.
type DownError struct {
	Path string
	Err  error
}

func (e *DownError) Error() string {
	return fmt.Sprintf("no control socket at %s: is holdfast running?", e.Path)
}

func (e *DownError) Unwrap() error { return ErrNoDaemon }

func (c *Client) do(ctx context.Context, method, path string, q url.Values, body io.Reader, ctype string) (*http.Response, error) {
	u := "http://holdfast" + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return nil, err
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		if isDown(err) {
			return nil, &DownError{Path: c.Path, Err: err}
		}
		return nil, err
	}
	if resp.StatusCode/100 != 2 {
		defer resp.Body.Close()
		var er errorReply
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		if json.Unmarshal(data, &er) != nil || er.Error == "" {
			er.Error = fmt.Sprintf("control: %s: %s", resp.Status, bytes.TrimSpace(data))
		}
		return nil, &Error{Status: resp.StatusCode, Code: er.Code, Msg: er.Error}
	}
	return resp, nil
}

// isDown reports a dial failure: no socket file, nobody listening, or no
// permission to connect (which the CLI reports with the path too).
func isDown(err error) bool {
	var op *net.OpError
	if !errors.As(err, &op) || op.Op != "dial" {
		return false
	}
	return errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED) ||
		errors.Is(err, syscall.ENOTDIR)
}

func (c *Client) getJSON(ctx context.Context, path string, q url.Values, v any) error {
	resp, err := c.do(ctx, http.MethodGet, path, q, nil, "")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return json.NewDecoder(resp.Body).Decode(v)
}

func (c *Client) postJSON(ctx context.Context, path string, in any) (*http.Response, error) {
	data, err := json.Marshal(in)
	if err != nil {
		return nil, err
	}
	return c.do(ctx, http.MethodPost, path, nil, bytes.NewReader(data), "application/json")
}

// Health checks that the daemon answers.
func (c *Client) Health(ctx context.Context) (Health, error) {
	var h Health
	return h, c.getJSON(ctx, "/v1/health", nil, &h)
}

// Stats returns the queue counters.
func (c *Client) Stats(ctx context.Context) (Stats, error) {
	var s Stats
	return s, c.getJSON(ctx, "/v1/stats", nil, &s)
}

// Shape returns the queue's domain and age distribution (qshape).
func (c *Client) Shape(ctx context.Context, o ShapeOptions) (*Shape, error) {
	var s Shape
	return &s, c.getJSON(ctx, "/v1/shape", o.query(), &s)
}

// Config returns the daemon's expanded values of the named parameters.
func (c *Client) Config(ctx context.Context, names ...string) (map[string]string, error) {
	out := map[string]string{}
	return out, c.getJSON(ctx, "/v1/config", url.Values{"name": names}, &out)
}

// List streams the messages matching f to fn, in arrival order, from the
// start (after "") or after a cursor; limit 0 means all. It returns the
// cursor to continue from ("" at the end). An error from fn stops the
// listing and is returned.
func (c *Client) List(ctx context.Context, f Filter, after string, limit int, fn func(*Message) error) (string, error) {
	q := url.Values{}
	for _, s := range f.States {
		q.Add("state", s)
	}
	set := func(k, v string) {
		if v != "" {
			q.Set(k, v)
		}
	}
	set("domain", f.Domain)
	set("sender", f.Sender)
	set("recipient", f.Recipient)
	set("older_than", f.OlderThan)
	set("after", after)
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	resp, err := c.do(ctx, http.MethodGet, "/v1/queue", q, nil, "")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var last ListLine
	err = readLines(resp.Body, func(dec *json.Decoder) (bool, error) {
		var l ListLine
		if err := dec.Decode(&l); err != nil {
			return false, err
		}
		if l.Message != nil {
			return false, fn(l.Message)
		}
		last = l
		return l.End, nil
	})
	if err != nil {
		return "", err
	}
	if last.Error != "" {
		return "", errors.New(last.Error)
	}
	return last.Next, nil
}

// readLines decodes a JSON-lines stream until step reports the end line;
// a stream that stops before it is an error (the daemon went away).
func readLines(r io.Reader, step func(*json.Decoder) (bool, error)) error {
	dec := json.NewDecoder(bufio.NewReaderSize(r, 64<<10))
	for {
		end, err := step(dec)
		if err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				return errors.New("control: reply cut short (daemon stopped?)")
			}
			return err
		}
		if end {
			return nil
		}
	}
}

// Show returns a message's envelope and content.
func (c *Client) Show(ctx context.Context, id string) (*Show, error) {
	var s Show
	if err := c.getJSON(ctx, "/v1/queue/"+url.PathEscape(id), nil, &s); err != nil {
		return nil, err
	}
	return &s, nil
}

// Operate runs delete, hold, release or requeue; progress, if not nil, is
// called for each progress line. It returns the final line.
func (c *Client) Operate(ctx context.Context, op string, req OpRequest, progress func(Progress)) (Progress, error) {
	return postProgress(ctx, c, "/v1/queue/"+url.PathEscape(op), req, progress,
		func(p Progress) (bool, string) { return p.End, p.Error })
}

// Flush asks for a flush; with req.Wait, progress is called for each
// status line until the end. It returns the final line.
func (c *Client) Flush(ctx context.Context, req FlushRequest, progress func(FlushStatus)) (FlushStatus, error) {
	return postProgress(ctx, c, "/v1/flush", req, progress,
		func(s FlushStatus) (bool, string) { return s.End, s.Error })
}

// postProgress posts req to path and reads the progress lines of the
// reply (Progress, FlushStatus), calling progress (if not nil) for each,
// until the line that ends says so (ends: whether it is the last, and
// its error text). It returns the final line, and its error as an error.
func postProgress[T any](ctx context.Context, c *Client, path string, req any, progress func(T),
	ends func(T) (bool, string)) (T, error) {
	var last T
	resp, err := c.postJSON(ctx, path, req)
	if err != nil {
		return last, err
	}
	defer resp.Body.Close()
	err = readLines(resp.Body, func(dec *json.Decoder) (bool, error) {
		var l T
		if err := dec.Decode(&l); err != nil {
			return false, err
		}
		last = l
		if progress != nil {
			progress(l)
		}
		end, _ := ends(l)
		return end, nil
	})
	if _, msg := ends(last); err == nil && msg != "" {
		err = errors.New(msg)
	}
	return last, err
}

// Submit queues a message from local submission. hasSender false lets
// the daemon use the caller's login name.
func (c *Client) Submit(ctx context.Context, sender string, hasSender bool, rcpts []string, content io.Reader) (string, error) {
	q := url.Values{"rcpt": rcpts}
	if hasSender {
		q.Set("sender", sender)
	}
	resp, err := c.do(ctx, http.MethodPost, "/v1/submit", q, content, "message/rfc822")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var r SubmitReply
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return "", err
	}
	return r.ID, nil
}

// Check runs the store's consistency check in the daemon.
func (c *Client) Check(ctx context.Context) error {
	var ok map[string]bool
	return c.getJSON(ctx, "/v1/db/check", nil, &ok)
}

// Backup writes a consistent snapshot of the queue database to w.
func (c *Client) Backup(ctx context.Context, w io.Writer) (int64, error) {
	resp, err := c.do(ctx, http.MethodGet, "/v1/db/backup", nil, nil, "")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	n, err := io.Copy(w, resp.Body)
	if err != nil {
		return n, fmt.Errorf("control: backup cut short after %d bytes: %w", n, err)
	}
	return n, nil
}

// Reload asks the daemon to re-read its configuration (holdfast reload).
// An error whose code is CodeReloadFailed means the new configuration was
// refused and the old one stays in force.
func (c *Client) Reload(ctx context.Context) (ReloadResult, error) {
	var res ReloadResult
	resp, err := c.postJSON(ctx, "/v1/reload", struct{}{})
	if err != nil {
		return res, err
	}
	defer resp.Body.Close()
	err = json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&res)
	return res, err
}
