package smtpd

import (
	"bytes"
	"io"
)

// content is where the message content of DATA and BDAT goes on its way
// to the queue: every line end is made CRLF, and the size is limited.
// RFC 5321 sec 2.3.8 allows CR and LF only as the CRLF pair; a bare LF
// or a bare CR is stored as CRLF, so that what is relayed never carries
// one (a next hop that took a bare CR or LF for a line end could
// otherwise be made to see a second message: SMTP smuggling).
type content struct {
	w     io.Writer
	limit int64 // message_size_limit on what is stored; 0 = none
	n     int64 // bytes stored
	over  bool  // past limit: the rest is discarded
	err   error // the first write error of w; the rest is discarded
	cr    bool  // the last byte was a CR whose successor is unknown yet
	// bareLF is set when a bare LF was seen (smtpd_forbid_bare_newline).
	bareLF bool
	// hops counts the Received: header fields of the header section, as
	// Postfix's cleanup does for hopcount_limit (our own is not in it).
	hops int
	// Header scan state: the header section ended (empty line), the
	// current line's first bytes and length.
	inBody  bool
	head    [9]byte
	lineLen int
}

var (
	crlf = []byte("\r\n")
	lf   = crlf[1:]
)

// Write stores p with its line ends made CRLF. It never fails: the
// outcome (over, err) is read at the end, as the client must be read to
// the end of the content anyway.
func (c *content) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		if c.cr {
			c.cr = false
			if p[0] == '\n' {
				c.put(lf)
				p = p[1:]
				continue
			}
			c.put(lf) // a bare CR: stored as CRLF
		}
		i := bytes.IndexAny(p, "\r\n")
		switch {
		case i < 0:
			c.put(p)
			return n, nil
		case p[i] == '\n':
			c.bareLF = true
			c.put(p[:i])
			c.put(crlf)
			p = p[i+1:]
		case i+1 == len(p):
			c.put(p)
			c.cr = true
			return n, nil
		case p[i+1] == '\n':
			c.put(p[:i+2])
			p = p[i+2:]
		default:
			c.put(p[:i+1])
			c.put(lf)
			p = p[i+1:]
		}
	}
	return n, nil
}

// end completes a CR left at the very end of the content.
func (c *content) end() {
	if c.cr {
		c.cr = false
		c.put(lf)
	}
}

func (c *content) put(p []byte) {
	if !c.inBody {
		c.scanHeader(p)
	}
	if c.over || c.err != nil || len(p) == 0 {
		return
	}
	if c.limit > 0 && c.n+int64(len(p)) > c.limit {
		c.over = true
		return
	}
	c.n += int64(len(p))
	_, c.err = c.w.Write(p)
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
