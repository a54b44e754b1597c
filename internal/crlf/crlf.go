// Package crlf makes line ends canonical. RFC 5321 sec 2.3.8 allows CR
// and LF in mail content only as the CRLF pair; a next hop that took a
// bare CR or bare LF for a line end could be made to see a second
// message (SMTP smuggling), so what holdfast queues has CRLF only.
package crlf

import (
	"bytes"
	"io"
)

var (
	pair = []byte("\r\n")
	lf   = pair[1:]
)

// Writer writes to W with every bare CR and bare LF made CRLF, across
// writes: a CR at the end of one write is completed by the next (or by
// Close). It never splits a write's bytes other than at CR and LF.
type Writer struct {
	W io.Writer
	// BareLF is set once a bare LF was seen (Postfix's
	// smtpd_forbid_bare_newline acts on it).
	BareLF bool
	cr     bool // the last byte was a CR whose successor is not known yet
}

// Write implements io.Writer; it returns len(p) or W's first error.
func (c *Writer) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		if c.cr {
			c.cr = false
			if p[0] == '\n' {
				if _, err := c.W.Write(lf); err != nil {
					return 0, err
				}
				p = p[1:]
				continue
			}
			if _, err := c.W.Write(lf); err != nil { // a bare CR: made CRLF
				return 0, err
			}
		}
		var out, tail []byte
		i := bytes.IndexAny(p, "\r\n")
		switch {
		case i < 0:
			out, p = p, nil
		case p[i] == '\n':
			c.BareLF = true
			out, tail, p = p[:i], pair, p[i+1:]
		case i+1 == len(p):
			out, p = p, nil
			c.cr = true
		case p[i+1] == '\n':
			out, p = p[:i+2], p[i+2:]
		default:
			out, tail, p = p[:i+1], lf, p[i+1:]
		}
		if len(out) > 0 {
			if _, err := c.W.Write(out); err != nil {
				return 0, err
			}
		}
		if tail != nil {
			if _, err := c.W.Write(tail); err != nil {
				return 0, err
			}
		}
	}
	return n, nil
}

// Close completes a CR left at the very end; it does not close W.
func (c *Writer) Close() error {
	if !c.cr {
		return nil
	}
	c.cr = false
	_, err := c.W.Write(lf)
	return err
}
