package control

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/holdfast-mta/holdfast/internal/crlf"
	"github.com/holdfast-mta/holdfast/store"
)

// submit queues a message from local submission (sendmail). The query
// carries the envelope (?sender=, repeatable ?rcpt=); the request body is
// the message with CRLF line ends. The daemon adds a Received: line and,
// when missing, From:, Date: and Message-ID: (as Postfix's cleanup does
// for local mail).
func (s *Server) submit(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	peer := peerFrom(r.Context())
	sender, rcpts, err := s.envelope(q, peer.UID)
	if err != nil {
		return err
	}
	limit, err := s.cfg().config.Size("message_size_limit")
	if err != nil || limit <= 0 {
		limit = 1 << 40
	}
	var queue Enqueuer = s.o.Store
	if s.o.Queue != nil {
		queue = s.o.Queue
	}
	now := s.o.Now()
	id := store.NewID()
	// The content goes to the queue's spool as it is read, as SMTP's
	// does: memory stays bounded whatever the size of the message.
	sp, err := queue.Spool(id)
	if err != nil {
		return submitError(err)
	}
	head, size, err := s.writeContent(sp, r.Body, limit, id, sender, now)
	if err != nil {
		sp.Abort()
		return err
	}
	bodyRead(w)
	if size > limit {
		sp.Abort()
		return errf(http.StatusRequestEntityTooLarge, CodeTooBig, "message file too big")
	}
	m := &store.Message{
		ID: id, Sender: sender, Arrival: now,
		Protocol: "LOCAL", ClientName: "localhost",
		// Postfix's smtputf8_autodetect_classes (default sendmail,
		// verify): a local submission whose envelope or header section
		// is not ASCII ("u@café.test") is marked SMTPUTF8, so that it
		// goes to next hops that offer it and is returned by others
		// instead of being sent as if it were ASCII.
		SMTPUTF8: !isASCII(sender) || !isASCII(strings.Join(rcpts, "")) || !isASCII(string(head)),
	}
	if dw := s.cfg().delayWarning; sender != "" && dw > 0 {
		m.WarnAt = now.Add(dw) // reference spec §3.8
	}
	for _, a := range rcpts {
		m.Recipients = append(m.Recipients, store.Recipient{Addr: a})
	}
	if err := sp.Enqueue(m); err != nil {
		return submitError(err)
	}
	s.o.Metrics.Accepted()
	if s.o.Wake != nil && s.o.Queue == nil {
		s.o.Wake()
	}
	s.o.Log.Info().Str("queue_id", string(id)).Str("from", sender).Int64("size", m.Size).
		Int("nrcpt", len(rcpts)).Int("uid", peer.UID).Msg("local submission")
	return writeJSON(w, SubmitReply{ID: string(id)})
}

// envelope is the submission's sender and recipients from the query
// (?sender=, repeatable ?rcpt=): the sender defaults to the user's local
// address, a recipient without a domain gets the local one.
func (s *Server) envelope(q url.Values, uid int) (string, []string, error) {
	rcpts := q["rcpt"]
	if len(rcpts) == 0 {
		return "", nil, errf(http.StatusBadRequest, CodeBadRequest, "no recipient addresses found in message header")
	}
	sender := q.Get("sender")
	if !q.Has("sender") {
		sender = s.localAddress(userName(uid))
	}
	for _, a := range append([]string{sender}, rcpts...) {
		if strings.ContainsAny(a, "\r\n<>") {
			return "", nil, errf(http.StatusBadRequest, CodeBadRequest, "bad address syntax: %q", a)
		}
	}
	for i, a := range rcpts {
		if !strings.Contains(a, "@") {
			rcpts[i] = s.localAddress(a)
		}
	}
	return sender, rcpts, nil
}

// writeContent writes the message from body to sp, our headers first and
// line ends made CRLF (as for SMTP: nothing queued carries a bare CR or
// LF), and returns its header section and the size read (more than
// limit: too big). The caller aborts sp on error.
func (s *Server) writeContent(sp store.Content, body io.Reader, limit int64, id store.ID, sender string, now time.Time) ([]byte, int64, error) {
	in := bufio.NewReader(io.LimitReader(body, limit+1))
	head, err := readHead(in, headLimit)
	if err != nil {
		return nil, 0, errf(http.StatusBadRequest, CodeBadRequest, "read message: %v", err)
	}
	norm := &crlf.Writer{W: sp}
	norm.Write(s.localHeaders(id, sender, head, now))
	n, err := io.Copy(norm, in)
	if err == nil {
		err = norm.Close()
	}
	if errors.Is(err, store.ErrNoSpace) {
		return nil, 0, submitError(err) // writing, not reading, failed
	}
	if err != nil {
		return nil, 0, errf(http.StatusBadRequest, CodeBadRequest, "read message: %v", err)
	}
	return head, int64(len(head)) + n, nil
}

// submitError maps a queue failure: a full disk or in-flight budget is
// 507 (sendmail's EX_TEMPFAIL), anything else internal.
func submitError(err error) error {
	if errors.Is(err, store.ErrNoSpace) || errors.Is(err, store.ErrBusy) {
		return errf(http.StatusInsufficientStorage, CodeNoSpace, "queue file write error: %v", err)
	}
	return err
}

// headLimit bounds the header section that local submission reads into
// memory to look for From:, Date: and Message-ID:; a longer header is
// passed on as it is.
const headLimit = 1 << 20

// readHead reads the header section with its empty line (or the whole
// content when it has none, or the first limit bytes and the rest of
// that line).
func readHead(in *bufio.Reader, limit int) ([]byte, error) {
	var head []byte
	for len(head) < limit {
		line, err := in.ReadSlice('\n')
		head = append(head, line...)
		if err == io.EOF {
			return head, nil
		}
		if err != nil && err != bufio.ErrBufferFull {
			return nil, err
		}
		if err == nil && (string(line) == "\r\n" || string(line) == "\n") {
			break
		}
	}
	return head, nil
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// localAddress qualifies a bare user name with myorigin.
func (s *Server) localAddress(user string) string {
	c := s.cfg().config
	origin := c.String("myorigin")
	if origin == "" {
		origin = c.String("myhostname")
	}
	if origin == "" {
		return user
	}
	return user + "@" + origin
}

// localHeaders prepends the Received: line and adds the From:, Date: and
// Message-ID: headers that the message lacks (RFC 5322 sec 3.6).
func (s *Server) localHeaders(id store.ID, sender string, content []byte, now time.Time) []byte {
	host := s.cfg().config.String("myhostname")
	date := now.Format("Mon, 2 Jan 2006 15:04:05 -0700 (MST)")
	var b bytes.Buffer
	// RFC 5321 sec 4.4: the trace line of local submission.
	fmt.Fprintf(&b, "Received: by %s (holdfast) with LOCAL id %s;\r\n\t%s\r\n", host, id, date)
	have := headerNames(content)
	if !have["date"] {
		fmt.Fprintf(&b, "Date: %s\r\n", date)
	}
	if !have["from"] {
		from := sender
		if from == "" {
			from = "MAILER-DAEMON"
		}
		fmt.Fprintf(&b, "From: %s\r\n", from)
	}
	if !have["message-id"] {
		fmt.Fprintf(&b, "Message-Id: <%s.%s@%s>\r\n", now.UTC().Format("20060102150405"), id, host)
	}
	b.Write(content)
	return b.Bytes()
}

// headerNames returns the lower-cased names of the header fields before
// the first empty line.
func headerNames(content []byte) map[string]bool {
	names := map[string]bool{}
	for len(content) > 0 {
		line := content
		if i := bytes.IndexByte(content, '\n'); i >= 0 {
			line, content = content[:i], content[i+1:]
		} else {
			content = nil
		}
		line = bytes.TrimRight(line, "\r")
		if len(line) == 0 {
			break
		}
		if line[0] == ' ' || line[0] == '\t' {
			continue
		}
		if i := bytes.IndexByte(line, ':'); i > 0 {
			names[strings.ToLower(strings.TrimSpace(string(line[:i])))] = true
		}
	}
	return names
}
