package smtpd

import (
	"bytes"
	"io"

	"github.com/holdfast-mta/holdfast/internal/crlf"
)

// content is where the message content of DATA and BDAT goes on its way
// to the queue: every line end is made CRLF (internal/crlf: a bare LF or
// bare CR is stored as CRLF, so that what is relayed never carries one),
// and the size is limited.
type content struct {
	w     io.Writer
	limit int64 // message_size_limit on what is stored; 0 = none
	n     int64 // bytes stored
	over  bool  // past limit: the rest is discarded
	err   error // the first write error of w; the rest is discarded
	norm  *crlf.Writer
	// hops counts the Received: header fields of the header section, as
	// Postfix's cleanup does for hopcount_limit (our own is not in it).
	hops int
	// Header scan state: the header section ended (empty line), the
	// current line's first bytes and length.
	inBody  bool
	head    [9]byte
	lineLen int
}

// Write stores p with its line ends made CRLF. It never fails: the
// outcome (over, err) is read at the end, as the client must be read to
// the end of the content anyway.
func (c *content) Write(p []byte) (int, error) {
	if c.norm == nil {
		c.norm = &crlf.Writer{W: putter{c}}
	}
	c.norm.Write(p)
	return len(p), nil
}

// end completes a CR left at the very end of the content.
func (c *content) end() {
	if c.norm != nil {
		c.norm.Close()
	}
}

// bareLF reports that a bare LF was seen (smtpd_forbid_bare_newline).
func (c *content) bareLF() bool { return c.norm != nil && c.norm.BareLF }

// noteBareLF records a bare LF that the DATA reader dropped with its
// "." line (it never reaches the normaliser).
func (c *content) noteBareLF() {
	if c.norm == nil {
		c.norm = &crlf.Writer{W: putter{c}}
	}
	c.norm.BareLF = true
}

type putter struct{ c *content }

func (p putter) Write(b []byte) (int, error) {
	c := p.c
	if !c.inBody {
		c.scanHeader(b)
	}
	if c.over || c.err != nil || len(b) == 0 {
		return len(b), nil
	}
	if c.limit > 0 && c.n+int64(len(b)) > c.limit {
		c.over = true
		return len(b), nil
	}
	c.n += int64(len(b))
	_, c.err = c.w.Write(b)
	return len(b), nil
}

// received is the name of the field hopcount_limit counts.
var received = []byte("received:")

// scanHeader counts Received: fields in p, content with CRLF line ends,
// until the empty line that ends the header section (RFC 5322 sec 2.1).
// Folded lines begin with white space and are not counted.
func (c *content) scanHeader(p []byte) {
	for _, b := range p {
		if b != '\n' {
			if c.lineLen < len(c.head) {
				c.head[c.lineLen] = b
			}
			c.lineLen++
			continue
		}
		if c.lineLen <= 1 { // "\r\n": the end of the header section
			c.inBody = true
			return
		}
		if c.lineLen >= len(c.head) && bytes.EqualFold(c.head[:], received) {
			c.hops++
		}
		c.lineLen = 0
	}
}
