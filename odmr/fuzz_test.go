package odmr

import (
	"bytes"
	"net"
	"regexp"
	"strings"
	"testing"
	"time"
)

// What the provider may write: replies, and after a turnaround the
// commands of its SMTP client and the message it sends.
var outLine = regexp.MustCompile(`^([2-5][0-9][0-9][ -].*|EHLO relay\.test|QUIT|MAIL FROM:<.*|RCPT TO:<.*|DATA|RSET|\.|Subject: for u@a\.test|hello|Received: .*|\t.*|)$`)

// FuzzSession feeds arbitrary bytes as the client's whole input to an
// ODMR session, in memory; a real store and scheduler stand behind it,
// with one message for a.test so that ATRN can turn around and the rest
// of the input plays the customer's server. Every line written must be a
// reply or, after the turnaround, part of the SMTP client's side; the
// session must end, and the message is never left leased.
func FuzzSession(f *testing.F) {
	f.Add([]byte("EHLO c\r\nAUTH PLAIN AGFsaWNlAHNlY3JldA==\r\nATRN a.test\r\n220 c\r\n250 c\r\n250 ok\r\n250 ok\r\n354 go\r\n250 ok\r\n221 bye\r\n"))
	f.Add([]byte("ATRN\r\nEHLO c\r\nAUTH LOGIN\r\nYWxpY2U=\r\nc2VjcmV0\r\nATRN a.test,b.test,,\r\nQUIT\r\n"))
	f.Add([]byte("EHLO c\r\nAUTH CRAM-MD5\r\n*\r\nAUTH PLAIN =\r\nMAIL FROM:<x>\r\nHELO x\r\nNOOP\r\n"))
	f.Add([]byte("EHLO c\r\nAUTH PLAIN AGFsaWNlAHNlY3JldA==\r\nATRN\r\n220 c\r\n500 no\r\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		r := newRig(t, false)
		r.queue("s@origin.test", "u@a.test")
		c := &memConn{r: bytes.NewReader(in)}
		done := make(chan struct{})
		go func() { r.srv.handle(c); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Fatal("session did not end")
		}
		for _, l := range strings.Split(c.out.String(), "\r\n") {
			if !outLine.MatchString(l) {
				t.Fatalf("unexpected output line %q", l)
			}
		}
		if st := r.stats(); st.Active != 0 || st.Incoming+st.Deferred+st.Active == 0 && c.delivered() == 0 {
			t.Fatalf("queue after the session: %+v", st)
		}
	})
}

// memConn reads the input then EOF and collects what is written.
type memConn struct {
	r   *bytes.Reader
	out bytes.Buffer
}

func (c *memConn) Read(p []byte) (int, error)  { return c.r.Read(p) }
func (c *memConn) Write(p []byte) (int, error) { return c.out.Write(p) }
func (c *memConn) Close() error                { return nil }
func (c *memConn) LocalAddr() net.Addr         { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 366} }
func (c *memConn) RemoteAddr() net.Addr        { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000} }
func (c *memConn) SetDeadline(time.Time) error { return nil }
func (c *memConn) SetReadDeadline(time.Time) error {
	return nil
}
func (c *memConn) SetWriteDeadline(time.Time) error { return nil }

// delivered: the output holds a complete message (its final dot).
func (c *memConn) delivered() int { return strings.Count(c.out.String(), "\r\n.\r\n") }
