package smtpd

import (
	"io"
	"strconv"
	"strings"

	"github.com/emersion/go-smtp"
)

// chunk is a BDAT command (RFC 3030) whose data follows it.
type chunk struct {
	size int64
	last bool
	fail *smtp.SMTPError // the reply when the data is to be skipped
}

// bdatCmd: RFC 3030 sec 2. Whatever the outcome, the chunk's data follows
// the command and must be consumed, so the handler reads (or skips) it
// and returns the reply to both; only a malformed command, whose data
// cannot be delimited, is answered at once, with a hang-up. A read that
// fails inside the data ends the session without a reply of its own
// (actTimeout, actLost).
func (s *session) bdatCmd(arg string) (*smtp.SMTPError, action) {
	c := parseBdat(arg)
	if c == nil {
		return replyBdatSyntax, actHangUp
	}
	c.fail = s.bdatRefused(c)
	// The data is content: its own request deadline, with
	// smtpd_min_data_rate, and the transaction's.
	s.txClock()
	s.io.begin(true)
	r, err := s.receiveChunk(c)
	if err != nil {
		return nil, readFailed(err)
	}
	return r, actNext
}

// parseBdat parses BDAT's argument, "size [LAST]"; nil when malformed.
func parseBdat(arg string) *chunk {
	args := strings.Fields(arg)
	if len(args) < 1 || len(args) > 2 || !allDigits(args[0]) || len(args) == 2 && !strings.EqualFold(args[1], "LAST") {
		return nil
	}
	size, err := strconv.ParseInt(args[0], 10, 64)
	if err != nil {
		return nil
	}
	return &chunk{size: size, last: len(args) == 2}
}

// bdatRefused is the reply to a BDAT whose data is to be skipped, or nil:
// TLS required, no transaction or recipients, an earlier chunk failed, an
// empty chunk that is not the last, message_size_limit, and for the
// first chunk smtpd_data_restrictions, as at DATA. A failure that spoils
// the rest of the transfer is kept in tx.bdatFail.
func (s *session) bdatRefused(c *chunk) *smtp.SMTPError {
	o := &s.cfg.opts
	tx := s.tx
	switch {
	case o.EnforceTLS && !s.tls:
		return replyTLSFirst
	case tx == nil:
		return replyNeedRcpt
	case len(tx.rcpts) == 0:
		return replyNoValidRcpts
	case tx.bdatFail != nil:
		return tx.bdatFail
	case c.size == 0 && !c.last:
		return replyNullBdat
	case o.MessageSizeLimit > 0 && c.size > o.MessageSizeLimit-tx.bdatSize:
		tx.bdatFail = replyChunkTooBig
		return replyChunkTooBig
	}
	if tx.content == nil {
		// The first chunk: smtpd_data_restrictions, as at DATA.
		if r := s.checkData(); r != nil {
			tx.bdatFail = r
			return r
		}
	}
	return nil
}

// inBdat: a BDAT transfer has begun; MAIL, RCPT and DATA are refused
// until BDAT LAST or RSET.
func (tx *transaction) inBdat() bool {
	return tx != nil && (tx.content != nil || tx.bdatFail != nil)
}

// receiveChunk reads (or skips) the data of BDAT c and returns its
// reply; after BDAT LAST the message is enqueued like after DATA.
// Line ends are made CRLF across chunks (content); a bare LF under
// smtpd_forbid_bare_newline = reject fails the chunk and the rest of the
// transfer.
func (s *session) receiveChunk(c *chunk) (*smtp.SMTPError, error) {
	tx := s.tx
	if c.fail == nil && tx.content == nil {
		if r := s.spool(tx); r != nil {
			// The data is still read (and dropped); so is the rest of
			// the transfer.
			c.fail, tx.bdatFail = r, r
		} else {
			tx.arrival = s.cfg.opts.Now()
			s.out = s.received(s.out[:0], tx, string(tx.id), tx.arrival)
			tx.spool.Write(s.out)
			tx.content = &content{w: tx.spool, limit: s.cfg.opts.MessageSizeLimit}
		}
	}
	var dst io.Writer = io.Discard
	if c.fail == nil {
		dst = tx.content
	}
	if err := s.readChunk(dst, c.size); err != nil {
		return nil, err
	}
	if c.fail == nil && c.last {
		tx.content.end()
	}
	if c.fail == nil {
		c.fail = s.contentFailed(tx.content)
		if c.fail != nil {
			tx.bdatFail = c.fail
			tx.spool.Abort()
		}
	}
	if c.fail != nil {
		if c.last && tx != nil {
			s.reset()
		}
		return c.fail, nil
	}
	tx.bdatSize += c.size
	if !c.last {
		return replyChunkOK(c.size), nil
	}
	sp := tx.spool
	tx.spool = nil
	s.reset()
	return s.enqueue(tx, tx.arrival, sp), nil
}

// readChunk copies exactly n bytes of chunk data; the deadlines are
// s.io's (smtpd_timeout for the chunk, with smtpd_min_data_rate).
func (s *session) readChunk(dst io.Writer, n int64) error {
	for n > 0 {
		// Replies are flushed before a read that would block.
		if s.w.Buffered() > 0 && int64(s.r.Buffered()) < n {
			if err := s.flush(); err != nil {
				return err
			}
		}
		step := min(n, 64<<10)
		m, err := io.CopyN(dst, s.r, step)
		n -= m
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return err
		}
	}
	return nil
}
