package smtpd

import (
	"bufio"
	"bytes"
	"io"
	"strings"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/holdfast-mta/holdfast/accept"
	"github.com/holdfast-mta/holdfast/store"
)

// dataCmd: RFC 5321 sec 4.1.1.4. The content itself is read by the loop
// (session.content) after the 354 reply has been queued. The queue's
// spool is taken here, so that a full in-flight budget or disk is
// answered before the client sends the content.
func (s *session) dataCmd(arg string) (*smtp.SMTPError, action) {
	if s.tx == nil {
		return replyNeedRcpt, actNext
	}
	if len(s.tx.rcpts) == 0 {
		// With pipelining DATA may follow rejected recipients; Postfix
		// does not count this as a protocol error.
		return replyNoValidRcpts, actNext
	}
	if strings.TrimSpace(arg) != "" {
		return replyDataSyntax, actNext
	}
	if r := s.checkData(); r != nil {
		return r, actNext
	}
	if r := s.spool(s.tx); r != nil {
		return r, actNext
	}
	return replyStartData, actContent
}

// spool begins tx's message on the acceptance path (accept.Begin): its
// queue ID and the queue's spool for its content.
func (s *session) spool(tx *transaction) *smtp.SMTPError {
	d, err := s.srv.accept.Begin()
	if err != nil {
		return storeReply(err, s.log)
	}
	tx.id, tx.spool = d.ID, d
	return nil
}

// receive reads the content after 354 into the spool and answers it. The
// 250 is returned only after the store committed the message (DESIGN.md,
// Enqueue). A read error (lost client, timeout) is returned with nothing
// stored.
func (s *session) receive() (*smtp.SMTPError, error) {
	o := &s.cfg.opts
	tx := s.tx
	sp := tx.spool
	tx.spool = nil
	s.reset()
	now := o.Now()
	s.out = s.received(s.out[:0], tx, string(tx.id), now)
	sp.Write(s.out)
	c := &content{w: sp, limit: o.MessageSizeLimit}
	if err := s.readData(c); err != nil {
		sp.Abort()
		return nil, err
	}
	if r := s.contentFailed(c); r != nil {
		sp.Abort()
		return r, nil
	}
	return s.enqueue(tx, now, sp), nil
}

// contentFailed returns the reply for content that is not to be queued:
// over message_size_limit, or with a bare LF under
// smtpd_forbid_bare_newline = reject (Postfix's delayed reject, after
// the end of the content). With note, the bare LF is remembered for the
// disconnect log.
func (s *session) contentFailed(c *content) *smtp.SMTPError {
	if c.bareLF() && s.bare == BareNewlineNote {
		s.noteBareLF = true
	}
	switch {
	case c.over:
		return replySizeExceeded
	case s.cfg.opts.HopcountLimit > 0 && c.hops+1 >= s.cfg.opts.HopcountLimit:
		// Postfix's cleanup counts the Received: fields with smtpd's own
		// and refuses at hop_count >= hopcount_limit: a mail loop.
		s.log.Warn().Int("hops", c.hops+1).Msg("message rejected: hopcount exceeded")
		return replyTooManyHops
	case c.bareLF() && s.bare == BareNewlineReject:
		return replyBareLF(s.cfg.opts.BareNewlineRejectCode, s.cfg.opts.Hostname)
	}
	return nil
}

// enqueue queues the message whose content is in sp and returns the
// reply: 250 only after the commit (accept.Draft.Commit), else
// storeReply's (a write error of the content comes out here too).
func (s *session) enqueue(tx *transaction, now time.Time, sp *accept.Draft) *smtp.SMTPError {
	id := tx.id
	if r := s.checkEOD(tx); r != nil {
		sp.Abort()
		return r
	}
	if tx.discard {
		// DISCARD: claim success and drop the message, as Postfix does.
		sp.Abort()
		s.log.Info().Str("event", "discarded").Str("queue_id", string(id)).Str("from", tx.from).
			Int("nrcpt", len(tx.rcpts)).Str("client", s.namaddr).Msg("message discarded by access table")
		s.errors, s.junk = 0, 0
		return replyQueued(string(id))
	}
	m, err := sp.Commit(accept.Envelope{
		Origin:       accept.SMTP,
		Sender:       tx.from,
		Recipients:   tx.rcpts,
		Arrival:      now,
		Hold:         tx.hold, // HOLD: the message waits in the hold queue
		ClientAddr:   s.client.String(),
		ClientName:   s.name,
		Helo:         s.helo,
		Protocol:     s.protocol(),
		EnvID:        tx.envid,
		Ret:          tx.ret,
		SMTPUTF8:     tx.smtputf8,
		Body8Bit:     tx.body8bit,
		DelayWarning: s.cfg.opts.DelayWarning,
	})
	if err != nil {
		return storeReply(err, s.log.With().Str("queue_id", string(id)).Logger())
	}
	s.log.Info().Str("queue_id", string(id)).Str("event", "accepted").Str("from", tx.from).Int64("size", m.Size).
		Int("nrcpt", len(tx.rcpts)).Str("client", s.namaddr).Msg("message accepted")
	// Postfix forgives earlier errors after a message was received.
	s.errors, s.junk = 0, 0
	return replyQueued(string(id))
}

// received appends our Received: header to b, like Postfix's smtpd
// (accept.AppendReceived).
func (s *session) received(b []byte, tx *transaction, id string, now time.Time) []byte {
	o := &s.cfg.opts
	t := accept.Trace{Helo: s.helo, ClientName: s.name, ClientAddr: s.rfcAddr,
		By: o.Hostname, MailName: o.MailName, Protocol: s.protocol(), ID: store.ID(id), Date: now}
	if o.TLSReceivedHeader {
		t.TLS = s.tlsState
	}
	if o.SASL.AuthenticatedHeader {
		t.AuthSender = s.sasl.login
	}
	if len(tx.rcpts) == 1 {
		t.For = tx.rcpts[0].Addr
	}
	return accept.AppendReceived(b, t)
}

// readData copies the content to c until the line ".": RFC 5321 sec
// 4.5.2 dot-unstuffing; line ends made CRLF by c. Unless
// smtpd_forbid_bare_newline is no, the end is only a "." line that
// follows a CRLF-ended line and is itself ended by CRLF, so that a bare
// LF cannot be used to smuggle a second message, and a "." line ended by
// or following a bare LF is dropped (Postfix 3.9's smtpd.c). With no, a
// "." line ends the content whatever its line ends.
func (s *session) readData(c *content) error {
	std := s.bare != BareNewlineNo
	lineStart, prevCRLF := true, true
	var last byte = '\n'
	for {
		chunk, full, err := s.readContentLine()
		if err != nil {
			return err
		}
		n := len(chunk)
		isCRLF := full && (n >= 2 && chunk[n-2] == '\r' || n == 1 && !lineStart && last == '\r')
		if lineStart && full && chunk[0] == '.' {
			end, drop := dotLine(c, chunk, std, prevCRLF, isCRLF)
			if end {
				c.end()
				return nil
			}
			if drop {
				prevCRLF, lineStart, last = isCRLF, true, '\n'
				continue
			}
		}
		if n > 0 {
			last = chunk[n-1]
		}
		if lineStart && n > 0 && chunk[0] == '.' {
			chunk = chunk[1:]
		}
		c.Write(chunk)
		if full {
			prevCRLF = isCRLF
		}
		lineStart = full
	}
}

// readContentLine reads the next line of content, or as much of it as
// the buffer holds (full is false then), after sending the replies
// queued before a read that would block (the 354). Deadlines: s.io
// (smtpd_timeout for the whole content, with smtpd_min_data_rate, and
// the transaction deadline).
func (s *session) readContentLine() (chunk []byte, full bool, err error) {
	if s.w.Buffered() > 0 && !s.lineBuffered() {
		if err := s.flush(); err != nil {
			return nil, false, err
		}
	}
	chunk, err = s.r.ReadSlice('\n')
	if err != nil && err != bufio.ErrBufferFull {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, false, err
	}
	return chunk, err == nil, nil
}

// dotLine decides a whole line that starts with '.': the end of the
// content (end: "." alone, between CRLFs when bare newlines are
// refused or noted, with any line end otherwise), or a lone "." with a
// bare LF on either side, which is dropped (drop; the bare LF noted).
// Neither: a dot-stuffed line of content.
func dotLine(c *content, chunk []byte, std, prevCRLF, isCRLF bool) (end, drop bool) {
	n := len(chunk)
	switch {
	case std && prevCRLF && n == 3 && isCRLF:
		return true, false
	case !std && len(bytes.TrimRight(chunk[1:], "\r\n")) == 0:
		return true, false
	case std && (!isCRLF || !prevCRLF) && (n == 2 || n == 3 && isCRLF):
		if !isCRLF {
			c.noteBareLF()
		}
		return false, true
	}
	return false, false
}

// lineBuffered reports whether a whole line is already in the read buffer.
func (s *session) lineBuffered() bool {
	b, _ := s.r.Peek(s.r.Buffered())
	return bytes.IndexByte(b, '\n') >= 0
}
