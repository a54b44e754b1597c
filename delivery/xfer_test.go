package delivery

import (
	"bufio"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/textproto"
	"strings"
	"testing"
	"time"

	"github.com/holdfast-mta/holdfast/store"
)

// peer is one session of a scripted next hop on raw TCP: it reads what
// the client sends line by line and answers what the script says.
type peer struct {
	c    net.Conn
	r    *bufio.Reader
	w    io.Writer
	errs chan<- error
}

// line reads one line, CRLF removed. The deadline only turns a client
// that waits for a reply it should not wait for into a failure.
func (p *peer) line() string {
	p.c.SetReadDeadline(time.Now().Add(20 * time.Second))
	l, err := p.r.ReadString('\n')
	if err != nil {
		p.errs <- fmt.Errorf("peer read: %v (after %q)", err, l)
		return ""
	}
	return strings.TrimRight(l, "\r\n")
}

func (p *peer) send(s string) { io.WriteString(p.w, s) }

// expect reads one line and reports it unless it is want.
func (p *peer) expect(want string) {
	if got := p.line(); got != want {
		p.errs <- fmt.Errorf("peer got %q, want %q", got, want)
	}
}

// greet sends the greeting and answers EHLO with the keywords ext.
func (p *peer) greet(ext ...string) {
	p.send("220 peer.test ESMTP\r\n")
	if l := p.line(); !strings.HasPrefix(l, "EHLO ") {
		p.errs <- fmt.Errorf("peer got %q, want EHLO", l)
	}
	lines := append([]string{"peer.test"}, ext...)
	for i, l := range lines {
		sep := "-"
		if i == len(lines)-1 {
			sep = " "
		}
		p.send("250" + sep + l + "\r\n")
	}
}

// content reads the message content up to and including the final dot.
func (p *peer) content() string {
	var b strings.Builder
	for {
		l := p.line()
		if l == "." || l == "" && b.Len() > 1<<20 {
			return b.String()
		}
		b.WriteString(l + "\n")
	}
}

// rest answers what the client sends after the transaction: RSET, QUIT.
func (p *peer) rest() {
	for {
		p.c.SetReadDeadline(time.Now().Add(20 * time.Second))
		l, err := p.r.ReadString('\n')
		if err != nil {
			return
		}
		switch strings.TrimRight(l, "\r\n") {
		case "QUIT":
			p.send("221 2.0.0 Bye\r\n")
			return
		case "RSET":
			p.send("250 2.0.0 Ok\r\n")
		default:
			p.errs <- fmt.Errorf("peer got %q after the transaction", l)
			return
		}
	}
}

// newPeer is a next hop that runs script on each session; the script's
// failures come out of the returned channel.
func newPeer(t *testing.T, script func(p *peer)) (addr string, errs <-chan error) {
	ch := make(chan error, 16)
	h := newHostile(t, func(c net.Conn, w io.Writer) {
		script(&peer{c: c, r: bufio.NewReader(c), w: w, errs: ch})
	})
	return h.ln.Addr().String(), ch
}

// pipeEnv is a scheduler whose domain peer.test goes to addr.
func pipeEnv(t *testing.T, addr string) *env {
	return newEnv(t, func(e *env) { e.tm["peer.test"] = "smtp:" + addr })
}

func noPeerErrors(t *testing.T, errs <-chan error) {
	t.Helper()
	for {
		select {
		case err := <-errs:
			t.Error(err)
		default:
			return
		}
	}
}

// With PIPELINING (RFC 2920), MAIL FROM, every RCPT TO and DATA arrive
// before the server has answered any of them: the peer reads all five
// lines before it writes a reply, so a client that waited for the reply to
// MAIL FROM would never get it. The replies are then read in order: the
// refused recipient in the middle is deferred with its own reply, the
// others are delivered by the one end-of-data reply.
func TestPipelinedGroup(t *testing.T) {
	reads := make(chan int, 1)
	addr, errs := newPeer(t, func(p *peer) {
		p.greet("PIPELINING", "8BITMIME")
		var acc string
		var n int
		for strings.Count(acc, "\r\n") < 5 {
			p.c.SetReadDeadline(time.Now().Add(20 * time.Second))
			buf := make([]byte, 4096)
			k, err := p.c.Read(buf)
			if err != nil {
				p.errs <- fmt.Errorf("group incomplete: %q: %v", acc, err)
				reads <- n
				return
			}
			n++
			acc += string(buf[:k])
		}
		reads <- n
		group := strings.Split(strings.TrimSuffix(acc, "\r\n"), "\r\n")
		want := []string{"MAIL FROM:<alice@origin.test> BODY=8BITMIME", "RCPT TO:<b1@peer.test>", "RCPT TO:<b2@peer.test>", "RCPT TO:<b3@peer.test>", "DATA"}
		if strings.Join(group, "|") != strings.Join(want, "|") {
			p.errs <- fmt.Errorf("group %q, want %q", group, want)
		}
		p.send("250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n450 4.2.0 <b2@peer.test>: Mailbox busy\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n")
		if c := p.content(); !strings.Contains(c, "Hello.") {
			p.errs <- fmt.Errorf("content %q", c)
		}
		p.send("250 2.0.0 Ok: queued as P1\r\n")
		p.rest()
	})
	e := pipeEnv(t, addr)
	id := e.enqueue("alice@origin.test", "b1@peer.test", "b2@peer.test", "b3@peer.test")
	m := e.waitMsg(id, "the attempt", func(m *store.Message) bool { return m != nil && m.Recipients[1].Attempts >= 1 })
	noPeerErrors(t, errs)
	t.Logf("the group arrived in %d read(s)", <-reads)
	r := m.Recipients
	if r[0].State != store.RcptDelivered || r[2].State != store.RcptDelivered {
		t.Errorf("b1, b3: %+v, %+v, want delivered", r[0], r[2])
	}
	want := "host 127.0.0.1[127.0.0.1] said: 450 4.2.0 <b2@peer.test>: Mailbox busy (in reply to RCPT TO command)"
	if r[1].State != store.RcptPending || r[1].Reply != want || r[1].DSN != "4.2.0" {
		t.Errorf("b2: %+v, want deferred %q", r[1], want)
	}
}

// Every recipient refused, or DATA refused: no content is sent. The
// pipelined DATA is answered with an error and the client sends RSET; a
// server that answers DATA with 354 anyway gets a lone dot (RFC 2920 sec
// 3.1). Without PIPELINING, DATA is not sent at all.
func TestPipelinedRefusals(t *testing.T) {
	cases := []struct {
		name    string
		ext     []string
		script  func(p *peer)
		stage   string // the reply each recipient must carry
		wantDSN string
	}{
		{"all recipients refused", []string{"PIPELINING"}, func(p *peer) {
			for _, l := range []string{"MAIL FROM:<alice@origin.test>", "RCPT TO:<b1@peer.test>", "RCPT TO:<b2@peer.test>", "DATA"} {
				p.expect(l)
			}
			p.send("250 2.1.0 Ok\r\n450 4.1.1 <b1@peer.test>: unknown\r\n450 4.1.1 <b2@peer.test>: unknown\r\n554 5.5.1 Error: no valid recipients\r\n")
			p.expect("RSET")
			p.send("250 2.0.0 Ok\r\n")
		}, "RCPT TO", "4.1.1"},
		{"354 although all refused", []string{"PIPELINING"}, func(p *peer) {
			for i := 0; i < 4; i++ {
				p.line()
			}
			p.send("250 2.1.0 Ok\r\n450 4.1.1 <b1@peer.test>: unknown\r\n450 4.1.1 <b2@peer.test>: unknown\r\n354 go ahead\r\n")
			p.expect(".")
			p.send("554 5.5.1 no recipients\r\n")
		}, "RCPT TO", "4.1.1"},
		{"DATA refused", []string{"PIPELINING"}, func(p *peer) {
			for i := 0; i < 4; i++ {
				p.line()
			}
			p.send("250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n250 2.1.5 Ok\r\n451 4.3.0 Try again later\r\n")
			p.expect("RSET")
			p.send("250 2.0.0 Ok\r\n")
		}, "DATA", "4.3.0"},
		{"MAIL FROM refused", []string{"PIPELINING"}, func(p *peer) {
			for i := 0; i < 4; i++ {
				p.line()
			}
			p.send("451 4.7.1 Slow down\r\n503 5.5.1 need MAIL\r\n503 5.5.1 need MAIL\r\n503 5.5.1 need MAIL\r\n")
			p.expect("RSET")
			p.send("250 2.0.0 Ok\r\n")
		}, "MAIL FROM", "4.7.1"},
		{"all refused, no PIPELINING", nil, func(p *peer) {
			p.expect("MAIL FROM:<alice@origin.test>")
			p.send("250 2.1.0 Ok\r\n")
			p.expect("RCPT TO:<b1@peer.test>")
			p.send("450 4.1.1 <b1@peer.test>: unknown\r\n")
			p.expect("RCPT TO:<b2@peer.test>")
			p.send("450 4.1.1 <b2@peer.test>: unknown\r\n")
			p.expect("RSET")
			p.send("250 2.0.0 Ok\r\n")
		}, "RCPT TO", "4.1.1"},
		{"DATA refused, no PIPELINING", nil, func(p *peer) {
			p.expect("MAIL FROM:<alice@origin.test>")
			p.send("250 2.1.0 Ok\r\n")
			p.expect("RCPT TO:<b1@peer.test>")
			p.send("250 2.1.5 Ok\r\n")
			p.expect("RCPT TO:<b2@peer.test>")
			p.send("250 2.1.5 Ok\r\n")
			p.expect("DATA")
			p.send("451 4.3.0 Try again later\r\n")
			p.expect("RSET")
			p.send("250 2.0.0 Ok\r\n")
		}, "DATA", "4.3.0"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			addr, errs := newPeer(t, func(p *peer) {
				p.greet(tc.ext...)
				tc.script(p)
				p.rest()
			})
			e := pipeEnv(t, addr)
			id := e.enqueue("alice@origin.test", "b1@peer.test", "b2@peer.test")
			m := e.waitAttempts(id, 1)
			noPeerErrors(t, errs)
			for _, r := range m.Recipients {
				if r.State != store.RcptPending || r.DSN != tc.wantDSN || !strings.HasSuffix(r.Reply, "(in reply to "+tc.stage+" command)") {
					t.Errorf("%+v: want deferred %s in reply to %s", r, tc.wantDSN, tc.stage)
				}
			}
		})
	}
}

// Without PIPELINING each command waits for its reply: when the peer has
// read a command, nothing more is on the way.
func TestNoPipelining(t *testing.T) {
	addr, errs := newPeer(t, func(p *peer) {
		p.greet("8BITMIME")
		alone := func(want, reply string) {
			p.expect(want)
			if n := p.r.Buffered(); n > 0 {
				p.errs <- fmt.Errorf("%d bytes after %q before its reply", n, want)
			}
			p.send(reply)
		}
		alone("MAIL FROM:<alice@origin.test> BODY=8BITMIME", "250 2.1.0 Ok\r\n")
		alone("RCPT TO:<b1@peer.test>", "250 2.1.5 Ok\r\n")
		alone("RCPT TO:<b2@peer.test>", "550 5.1.1 <b2@peer.test>: unknown\r\n")
		alone("RCPT TO:<b3@peer.test>", "250 2.1.5 Ok\r\n")
		alone("DATA", "354 go ahead\r\n")
		p.content()
		p.send("250 2.0.0 Ok: queued as N1\r\n")
		p.rest()
	})
	e := pipeEnv(t, addr)
	id := e.enqueue("alice@origin.test", "b1@peer.test", "b2@peer.test", "b3@peer.test")
	e.waitGone(id) // b1, b3 delivered, b2 bounced
	noPeerErrors(t, errs)
}

// dotOut is what dotWriter sends for content written in pieces of split
// bytes, the final dot included.
func dotOut(t testing.TB, content string, split int) string {
	var b strings.Builder
	bw := bufio.NewWriterSize(&b, 16)
	d := &dotWriter{w: bw}
	for p := []byte(content); len(p) > 0; {
		k := min(split, len(p))
		if n, err := d.Write(p[:k]); n != k || err != nil {
			t.Fatalf("write %d: %d, %v", k, n, err)
		}
		p = p[k:]
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// textprotoOut is net/textproto's dot writer's output for content.
func textprotoOut(content string) string {
	var b strings.Builder
	bw := bufio.NewWriter(&b)
	d := textproto.NewWriter(bw).DotWriter()
	io.WriteString(d, content)
	d.Close()
	return b.String()
}

// The dot writer sends what net/textproto's sends for content with CRLF
// line ends (what the store holds), in any split; a bare CR or LF goes
// out as CRLF (textproto passes a bare CR on).
func TestDotWriter(t *testing.T) {
	rnd := rand.New(rand.NewPCG(1, 16))
	pieces := []string{".", "..", "a", "Subject: x", "\r\n", "\r\n.\r\n", ".\r\n", " ", "From "}
	for i := 0; i < 500; i++ {
		var b strings.Builder
		for n := rnd.IntN(30); n >= 0; n-- {
			b.WriteString(pieces[rnd.IntN(len(pieces))])
		}
		content := b.String() + "\r\n"
		want := textprotoOut(content)
		for _, split := range []int{1, 2, 3, 7, 1 << 20} {
			if got := dotOut(t, content, split); got != want {
				t.Fatalf("%q split %d:\ngot  %q\nwant %q", content, split, got, want)
			}
		}
	}
	for _, c := range []struct{ in, want string }{
		{"", ".\r\n"},
		{"no line end", "no line end\r\n.\r\n"},
		{".", "..\r\n.\r\n"},
		{"a\nb\n", "a\r\nb\r\n.\r\n"},
		{"hello\r.\rMAIL FROM:<x@y>\r\n", "hello\r\n..\r\nMAIL FROM:<x@y>\r\n.\r\n"},
		{"a\r\r\nb\r", "a\r\n\r\nb\r\n.\r\n"},
		{"\n.\n", "\r\n..\r\n.\r\n"},
	} {
		for _, split := range []int{1, 2, 1 << 20} {
			if got := dotOut(t, c.in, split); got != c.want {
				t.Errorf("%q split %d: got %q, want %q", c.in, split, got, c.want)
			}
		}
	}
}

// The commands written ahead of their replies stay within pipeBuf: with
// 40 recipients of 110 bytes, MAIL FROM and the first 33 RCPT TOs (4,057
// bytes) go first, and the client reads their replies before it sends
// the other 7 and DATA.
func TestPipelineBound(t *testing.T) {
	const n, first = 40, 33
	var rcpts []string
	for i := range n {
		rcpts = append(rcpts, fmt.Sprintf("%0100d@peer.test", i))
	}
	addr, errs := newPeer(t, func(p *peer) {
		p.greet("PIPELINING")
		ahead := 0
		for i := 0; i < 1+first; i++ {
			ahead += len(p.line()) + 2
		}
		if b := p.r.Buffered(); b > 0 || ahead > pipeBuf {
			p.errs <- fmt.Errorf("%d bytes, then %d more before a reply (bound %d)", ahead, b, pipeBuf)
		}
		p.send(strings.Repeat("250 2.1.5 Ok\r\n", 1+first))
		for i := 0; i < n-first; i++ {
			p.expect("RCPT TO:<" + rcpts[first+i] + ">")
		}
		p.expect("DATA")
		p.send(strings.Repeat("250 2.1.5 Ok\r\n", n-first) + "354 go ahead\r\n")
		p.content()
		p.send("250 2.0.0 Ok: queued as B1\r\n")
		p.rest()
	})
	e := pipeEnv(t, addr)
	id := e.enqueue("alice@origin.test", rcpts...)
	e.waitGone(id)
	noPeerErrors(t, errs)
}

// FuzzDotWriter: whatever the content and however it is split, the
// dot writer sends CRLF lines only, ends with the final dot, and a
// receiver that removes the stuffed dots gets the content back, every
// line end made CRLF (a bare CR or LF, and an open last line, included).
func FuzzDotWriter(f *testing.F) {
	f.Add([]byte("Subject: x\r\n\r\n.hello\r\n..\r\n"), uint8(3))
	f.Add([]byte("hello\r.\rMAIL FROM:<x@y>\r\n"), uint8(1))
	f.Add([]byte("\n.\n\r\r\n."), uint8(2))
	f.Fuzz(func(t *testing.T, content []byte, split uint8) {
		out := dotOut(t, string(content), int(split)+1)
		body, ok := strings.CutSuffix(out, ".\r\n")
		if !ok {
			t.Fatalf("no final dot: %q", out)
		}
		var got strings.Builder
		for _, l := range strings.SplitAfter(body, "\r\n") {
			if l == "" {
				continue
			}
			if !strings.HasSuffix(l, "\r\n") || strings.ContainsAny(l[:len(l)-2], "\r\n") {
				t.Fatalf("line %q is not one CRLF line in %q", l, out)
			}
			if l[0] == '.' {
				if len(l) < 2 || l[1] != '.' {
					t.Fatalf("unstuffed dot line %q in %q", l, out)
				}
				l = l[1:]
			}
			got.WriteString(l)
		}
		var want strings.Builder
		for i := 0; i < len(content); i++ {
			switch c := content[i]; {
			case c == '\r' && i+1 < len(content) && content[i+1] == '\n':
				want.WriteString("\r\n")
				i++
			case c == '\r' || c == '\n':
				want.WriteString("\r\n")
			default:
				want.WriteByte(c)
			}
		}
		if w := want.String(); w != "" && !strings.HasSuffix(w, "\r\n") {
			want.WriteString("\r\n")
		}
		if got.String() != want.String() {
			t.Fatalf("content %q split %d:\nunstuffed %q\nwant      %q", content, split, got.String(), want.String())
		}
	})
}
