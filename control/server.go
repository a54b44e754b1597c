package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/holdfast-mta/holdfast/accept"
	"github.com/holdfast-mta/holdfast/config"
	"github.com/holdfast-mta/holdfast/follow"
	"github.com/holdfast-mta/holdfast/internal/listener"
	"github.com/holdfast-mta/holdfast/store"
)

// Flusher is what the control server needs from the flush service
// (flush.Service), which counts the requests in the metrics.
type Flusher interface {
	Flush(site string, subtree bool) (store.FlushResult, error)
	FlushAll() (store.FlushResult, error)
	FlushID(id store.ID) (store.FlushResult, error)
	// Invalid counts a request refused here for the syntax of its site.
	Invalid()
}

// Options configure a control server.
type Options struct {
	Store  *store.Store
	Flush  Flusher
	Config *config.Config
	Log    zerolog.Logger
	// Events, if not nil, is told of each local submission accepted
	// (accept.Events: the metrics).
	Events accept.Events
	// Feed, if not nil, tells flush --wait the outcomes of the recipients
	// whose message has left the queue (delivered or bounced); without
	// it they count as Done.
	Feed *follow.Feed
	// Policy overrides the access policy built from Config (tests).
	Policy *Policy
	// Wake, if not nil, is called after operations that make mail due
	// now (release, requeue, submit): the scheduler's kick.
	Wake func()
	// Queue, if not nil, is where local submission queues (through
	// package accept) instead of Store (the scheduler's Admit, which defers defer_transports mail on
	// arrival and wakes the scheduler itself when mail is due now; Wake
	// is then not called after a submission).
	Queue accept.Queue
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// DelayWarning is delay_warning_time for local submission: mail with a
	// non-null sender gets WarnAt = arrival + DelayWarning (Postfix's
	// cleanup). 0 reads delay_warning_time from Config; negative means no
	// warnings.
	DelayWarning time.Duration
	// Reload, if not nil, serves POST /v1/reload (holdfast reload): it
	// re-reads the configuration and puts it in force, or returns why
	// not (the old one stays).
	Reload func() (ReloadResult, error)
	// Cluster, if not nil, answers cluster status and the cluster view
	// (package cluster, when cluster_etcd_endpoints is set).
	Cluster Cluster
}

// Server is the control API.
type Server struct {
	o    Options
	cur  atomic.Pointer[conf] // the configuration in force (Reconfigure)
	http *http.Server
	// chunk is the number of messages per transaction in bulk operations.
	chunk int
	// accept queues local submissions (Options.Queue or Store).
	accept *accept.Acceptor
}

// conf is what the control server takes from a configuration.
type conf struct {
	config       *config.Config
	policy       *Policy
	delayWarning time.Duration
}

// newConf reads c; policy and delayWarning, when set, override c (tests).
func newConf(c *config.Config, policy *Policy, delayWarning time.Duration) (*conf, error) {
	cf := &conf{config: c, policy: policy, delayWarning: delayWarning}
	if cf.delayWarning == 0 {
		d, err := c.Time("delay_warning_time")
		if err != nil {
			return nil, fmt.Errorf("control: %w", err)
		}
		cf.delayWarning = d
	}
	if cf.policy == nil {
		p, err := NewPolicy(c, os.Getuid())
		if err != nil {
			return nil, fmt.Errorf("control: %w", err)
		}
		cf.policy = p
	}
	return cf, nil
}

// cfg is the configuration in force.
func (s *Server) cfg() *conf { return s.cur.Load() }

// Reconfigure checks c (the access classes, delay_warning_time) and
// returns the function that puts it in force, so that a reload commits
// only once every part has accepted its new configuration. A Policy or a
// DelayWarning given in Options stays.
func (s *Server) Reconfigure(c *config.Config) (commit func(), err error) {
	cf, err := newConf(c, s.o.Policy, s.o.DelayWarning)
	if err != nil {
		return nil, err
	}
	return func() { s.cur.Store(cf) }, nil
}

// New returns a control server for the given store and flush service.
func New(o Options) (*Server, error) {
	if o.Store == nil || o.Flush == nil || o.Config == nil {
		return nil, errors.New("control: Store, Flush and Config are required")
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	cf, err := newConf(o.Config, o.Policy, o.DelayWarning)
	if err != nil {
		return nil, err
	}
	var queue accept.Queue = o.Store
	if o.Queue != nil {
		queue = o.Queue
	}
	s := &Server{o: o, chunk: 1000, accept: accept.New(queue, o.Events)}
	s.cur.Store(cf)
	s.http = &http.Server{
		Handler:           s.routes(),
		ReadHeaderTimeout: controlHeaderTimeout,
		IdleTimeout:       controlIdleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ConnState:         listener.NewConnCap(controlMaxConns).State,
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			return context.WithValue(ctx, peerKey{}, peerCred(c))
		},
	}
	return s, nil
}

// Listen creates the control socket at path: a stale socket left by a
// crash is removed, the directory is created, and the socket is made mode
// 0660 (the daemon's user and group).
func Listen(path string) (net.Listener, error) {
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode().Type() != fs.ModeSocket {
			return nil, fmt.Errorf("control: %s exists and is not a socket", path)
		}
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("control: %s: another holdfast is listening", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("control: remove stale socket: %w", err)
		}
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("control: %w", err)
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("control: %w", err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(true)
	if err := os.Chmod(path, 0o660); err != nil {
		l.Close()
		return nil, fmt.Errorf("control: %w", err)
	}
	return l, nil
}

// Serve answers requests on l until Shutdown.
func (s *Server) Serve(l net.Listener) error {
	err := s.http.Serve(l)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Shutdown stops accepting requests and waits for those in progress until
// ctx is done; long streams (listings, flush --wait) are then cut.
func (s *Server) Shutdown(ctx context.Context) error {
	err := s.http.Shutdown(ctx)
	if err != nil {
		s.http.Close()
	}
	return err
}

// handler is an endpoint that may fail with an *apiError.
type handler func(w http.ResponseWriter, r *http.Request) error

// apiError is an error reply: status, code and the message the CLI prints.
type apiError struct {
	status int
	code   string
	msg    string
}

func (e *apiError) Error() string { return e.msg }

func errf(status int, code, format string, args ...any) *apiError {
	return &apiError{status: status, code: code, msg: fmt.Sprintf(format, args...)}
}

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	add := func(pattern string, c Class, h handler) {
		mux.HandleFunc(pattern, s.wrap(c, h))
	}
	add("GET /v1/health", Anyone, s.health)
	add("GET /v1/stats", Mailq, s.stats)
	add("GET /v1/shape", Mailq, s.shape)
	add("GET /v1/config", Admin, s.config)
	add("GET /v1/queue", Mailq, s.list)
	add("GET /v1/queue/{id}", Admin, s.show)
	add("POST /v1/queue/{op}", Admin, s.operate)
	add("POST /v1/flush", FlushOp, s.flush)
	add("POST /v1/submit", Submit, s.submit)
	add("GET /v1/db/check", Admin, s.check)
	add("GET /v1/db/backup", Admin, s.backup)
	add("POST /v1/reload", Admin, s.reload)
	add("GET /v1/cluster/status", Mailq, s.clusterStatus)
	add("GET /v1/cluster/summary", Mailq, s.clusterSummary)
	add("POST /v1/cluster/flush", FlushOp, s.clusterFlush)
	add("GET /v1/cluster/flush", FlushOp, s.clusterFlushResults)
	return mux
}

// wrap checks the peer's access class, runs h and turns its error into a
// JSON error reply.
func (s *Server) wrap(c Class, h handler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			// Lifted by bodyRead: a body that trickles in is cut.
			http.NewResponseController(w).SetReadDeadline(time.Now().Add(controlBodyTimeout))
		}
		p := peerFrom(r.Context())
		if err := s.cfg().policy.Check(c, p.UID); err != nil {
			s.o.Log.Warn().Int("uid", p.UID).Str("path", r.URL.Path).Msg(err.Error())
			writeError(w, errf(http.StatusForbidden, CodeForbidden, "%s", err))
			return
		}
		if err := h(w, r); err != nil {
			var ae *apiError
			if !errors.As(err, &ae) {
				s.o.Log.Error().Err(err).Str("path", r.URL.Path).Msg("control request failed")
				ae = errf(http.StatusInternalServerError, CodeInternal, "%s", err)
			}
			writeError(w, ae)
		}
	}
}

func writeError(w http.ResponseWriter, e *apiError) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(e.status)
	json.NewEncoder(w).Encode(errorReply{Code: e.code, Error: e.msg})
}

func writeJSON(w http.ResponseWriter, v any) error {
	w.Header().Set("Content-Type", "application/json")
	return json.NewEncoder(w).Encode(v)
}

// lines streams JSON lines, flushing each to the client.
type lines struct {
	w   http.ResponseWriter
	enc *json.Encoder
	rc  *http.ResponseController
}

func newLines(w http.ResponseWriter) *lines {
	w.Header().Set("Content-Type", "application/jsonl")
	return &lines{w: w, enc: json.NewEncoder(w), rc: http.NewResponseController(w)}
}

func (l *lines) send(v any) error {
	if err := l.enc.Encode(v); err != nil {
		return err
	}
	return l.rc.Flush()
}

func (s *Server) health(w http.ResponseWriter, r *http.Request) error {
	return writeJSON(w, Health{OK: true, PID: os.Getpid(), UID: os.Getuid()})
}

func (s *Server) stats(w http.ResponseWriter, r *http.Request) error {
	st, err := s.o.Store.Stats()
	if err != nil {
		return err
	}
	return writeJSON(w, Stats{Incoming: st.Incoming, Active: st.Active, Deferred: st.Deferred,
		Hold: st.Hold, Corrupt: st.Corrupt, Bytes: st.Bytes})
}

// config answers the daemon's value of each ?name= parameter, expanded.
func (s *Server) config(w http.ResponseWriter, r *http.Request) error {
	names := r.URL.Query()["name"]
	if len(names) == 0 {
		return errf(http.StatusBadRequest, CodeBadRequest, "name a parameter: ?name=NAME")
	}
	out := make(map[string]string, len(names))
	for _, n := range names {
		v, err := s.cfg().config.Expand(n)
		if err != nil {
			return errf(http.StatusBadRequest, CodeBadRequest, "%s: %v", n, err)
		}
		out[n] = v
	}
	return writeJSON(w, out)
}

func (s *Server) check(w http.ResponseWriter, r *http.Request) error {
	if err := s.o.Store.Check(); err != nil {
		return errf(http.StatusConflict, "check_failed", "%s", err)
	}
	return writeJSON(w, map[string]bool{"ok": true})
}

// backup streams a consistent snapshot of the database (one read
// transaction: mail committed before the request is in it).
func (s *Server) backup(w http.ResponseWriter, r *http.Request) error {
	w.Header().Set("Content-Type", "application/octet-stream")
	n, err := s.o.Store.Backup(w)
	if err != nil {
		// Headers are gone: cut the stream so the client sees a short copy.
		s.o.Log.Error().Err(err).Int64("bytes", n).Msg("backup failed")
		panic(http.ErrAbortHandler)
	}
	s.o.Log.Info().Int64("bytes", n).Msg("backup sent")
	return nil
}

// reload re-reads the daemon's configuration (holdfast reload). A
// configuration that does not load is refused with 422 and its error; the
// old one stays in force.
func (s *Server) reload(w http.ResponseWriter, r *http.Request) error {
	if s.o.Reload == nil {
		return errf(http.StatusNotImplemented, CodeBadRequest, "this server cannot reload")
	}
	res, err := s.o.Reload()
	if err != nil {
		return errf(http.StatusUnprocessableEntity, CodeReloadFailed, "%s", err)
	}
	return writeJSON(w, res)
}
