package control

import (
	"errors"
	"net/http"
	"net/url"
	"strings"

	"github.com/holdfast-mta/holdfast/accept"
	"github.com/holdfast-mta/holdfast/store"
)

// submit queues a message from local submission (sendmail). The query
// carries the envelope (?sender=, repeatable ?rcpt=); the request body is
// the message with CRLF line ends. It takes the one acceptance path
// (package accept), which adds a Received: line and, when missing,
// From:, Date: and Message-ID: (as Postfix's cleanup does for local
// mail), and counts the message accepted.
func (s *Server) submit(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	peer := peerFrom(r.Context())
	sender, rcpts, err := s.envelope(q, peer.UID)
	if err != nil {
		return err
	}
	cf := s.cfg()
	limit, err := cf.config.Size("message_size_limit")
	if err != nil || limit <= 0 {
		limit = 1 << 40
	}
	now := s.o.Now()
	// The content goes to the queue's spool as it is read, as SMTP's
	// does: memory stays bounded whatever the size of the message.
	d, err := s.accept.Begin()
	if err != nil {
		return submitError(err)
	}
	head, size, err := d.WriteLocal(r.Body, limit, accept.LocalHeaders{Sender: sender,
		Hostname: cf.config.String("myhostname"), MailName: cf.config.String("mail_name"), Date: now})
	if err != nil {
		d.Abort()
		if errors.Is(err, store.ErrNoSpace) {
			return submitError(err) // writing, not reading, failed
		}
		return errf(http.StatusBadRequest, CodeBadRequest, "read message: %v", err)
	}
	bodyRead(w)
	if size > limit {
		d.Abort()
		return errf(http.StatusRequestEntityTooLarge, CodeTooBig, "message file too big")
	}
	env := accept.Envelope{Origin: accept.Local, Sender: sender, Arrival: now,
		Protocol: "LOCAL", ClientName: "localhost", DelayWarning: cf.delayWarning,
		SMTPUTF8: accept.LocalUTF8(sender, rcpts, head)}
	for _, a := range rcpts {
		env.Recipients = append(env.Recipients, store.Recipient{Addr: a})
	}
	m, err := d.Commit(env)
	if err != nil {
		return submitError(err)
	}
	if s.o.Wake != nil && s.o.Queue == nil {
		s.o.Wake()
	}
	s.o.Log.Info().Str("queue_id", string(m.ID)).Str("event", "accepted").Str("from", sender).
		Int64("size", m.Size).Int("nrcpt", len(rcpts)).Int("uid", peer.UID).Msg("local submission accepted")
	return writeJSON(w, SubmitReply{ID: string(m.ID)})
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

// submitError maps a queue failure: a full disk or in-flight budget is
// 507 (sendmail's EX_TEMPFAIL), anything else internal.
func submitError(err error) error {
	if errors.Is(err, store.ErrNoSpace) || errors.Is(err, store.ErrBusy) {
		return errf(http.StatusInsufficientStorage, CodeNoSpace, "queue file write error: %v", err)
	}
	return err
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
