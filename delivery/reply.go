package delivery

import (
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"

	"github.com/emersion/go-smtp"
)

// Bounds on what a next hop may send. RFC 5321 sec 4.5.3.1.5 allows a
// reply line of 512 octets; Postfix reads up to line_length_limit (2048)
// per line. A longer line, or a reply of more lines than any server needs
// (an EHLO reply has a few dozen), is a protocol error: the session ends
// and the delivery is deferred, instead of the client buffering whatever
// the server sends.
const (
	// MaxReplyLine is the longest reply line in bytes, CRLF included.
	MaxReplyLine = 2048
	// MaxReplyLines is the most lines in one (multi-line) reply.
	MaxReplyLines = 100
)

// errReplyLimit is a reply beyond MaxReplyLine or MaxReplyLines.
var errReplyLimit = errors.New("reply exceeds the limits")

// replyLimitError says which bound a next hop broke.
type replyLimitError struct{ what string }

func (e *replyLimitError) Error() string { return e.what }
func (e *replyLimitError) Unwrap() error { return errReplyLimit }

// replyBound checks the bytes a server sends and fails once a line or a
// reply is too long. It sits under any reader (textproto's, go-smtp's, an
// LMTP client's) and hands on complete lines only: a line is held (at
// most MaxReplyLine bytes) until its LF arrives, so a line cut by a bound,
// a timeout or the end of the connection never reaches the reader above
// as if it were whole (bufio's ReadLine would return it without error).
//
// It splits replies as net/textproto's ReadResponse does (go-smtp reads
// with it): a reply that began with "ddd-" goes on, whatever the lines in
// between look like, until a line "ddd " with the same code.
type replyBound struct {
	r     io.Reader
	buf   []byte  // buf[off:end] is read from r, not yet handed on
	off   int     // start of what is not handed on yet
	end   int     // end of what was read
	ready int     // buf[off:ready] is complete lines
	line  int     // bytes of the current line so far
	head  [4]byte // the current line's first bytes
	lines int     // lines of the current multi-line reply so far
	code  [3]byte // its code
	multi bool    // inside a multi-line reply
	err   error   // sticky: a broken bound, or r's error
}

// Read hands on complete lines; once they are out, it returns the error
// that stopped reading: a *replyLimitError, or r's (EOF, a timeout).
func (b *replyBound) Read(p []byte) (int, error) {
	for b.ready == b.off {
		if b.err != nil {
			return 0, b.err
		}
		if b.buf == nil {
			b.buf = make([]byte, 4*MaxReplyLine)
		}
		if len(b.buf)-b.end < MaxReplyLine {
			// What is left is part of one line: at most MaxReplyLine.
			b.end = copy(b.buf, b.buf[b.off:b.end])
			b.off, b.ready = 0, 0
		}
		n, err := b.r.Read(b.buf[b.end:])
		if lerr := b.scan(b.buf[b.end : b.end+n]); lerr != nil {
			err = lerr
		}
		b.end += n
		if err != nil {
			b.err = err
		}
	}
	n := copy(p, b.buf[b.off:b.ready])
	b.off += n
	return n, nil
}

// scan advances the counters over p, the bytes just read into buf at
// end, and marks complete lines ready. It stops at a broken bound.
func (b *replyBound) scan(p []byte) error {
	for i, c := range p {
		if b.line < len(b.head) {
			b.head[b.line] = c
		}
		b.line++
		if b.line > MaxReplyLine {
			return &replyLimitError{fmt.Sprintf("reply line longer than %d bytes", MaxReplyLine)}
		}
		if c != '\n' {
			continue
		}
		if err := b.endLine(); err != nil {
			return err
		}
		b.line = 0
		b.ready = b.end + i + 1
	}
	return nil
}

// endLine counts a complete line (RFC 5321 sec 4.2.1: "ddd-" lines, then
// "ddd ").
func (b *replyBound) endLine() error {
	code := [3]byte{b.head[0], b.head[1], b.head[2]}
	coded := b.line >= 5 && isDigit(code[0]) && isDigit(code[1]) && isDigit(code[2]) && code[0] != '0'
	if !b.multi {
		if coded && b.head[3] == '-' {
			b.multi, b.code, b.lines = true, code, 1
		}
		return nil
	}
	b.lines++
	if b.lines > MaxReplyLines {
		return &replyLimitError{fmt.Sprintf("reply of more than %d lines", MaxReplyLines)}
	}
	if coded && code == b.code && b.head[3] == ' ' {
		b.multi = false
	}
	return nil
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// boundedConn is a net.Conn whose reads go through a replyBound. The SMTP
// and LMTP clients read the server only through one.
type boundedConn struct {
	net.Conn
	b replyBound
}

func bound(c net.Conn) *boundedConn {
	bc := &boundedConn{Conn: c}
	bc.b.r = c
	return bc
}

func (c *boundedConn) Read(p []byte) (int, error) { return c.b.Read(p) }

// parseReply is the reply code and text a server refused a command with,
// as an *smtp.SMTPError: a leading enhanced status code (RFC 2034 sec 4:
// "x.y.z" on the first line, repeated on the lines after it) is taken
// out of the text into EnhancedCode.
func parseReply(code int, msg string) *smtp.SMTPError {
	se := &smtp.SMTPError{Code: code, EnhancedCode: smtp.NoEnhancedCode, Message: msg}
	first, rest, ok := strings.Cut(msg, " ")
	if !ok {
		return se
	}
	parts := strings.Split(first, ".")
	if len(parts) != 3 {
		return se
	}
	var ec smtp.EnhancedCode
	for i, p := range parts {
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 || len(p) > 3 {
			return se
		}
		ec[i] = n
	}
	se.EnhancedCode = ec
	se.Message = strings.ReplaceAll(rest, "\n"+first+" ", "\n")
	return se
}
