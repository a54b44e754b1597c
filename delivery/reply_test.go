package delivery

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/textproto"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/holdfast-mta/holdfast/store"
)

// hostile is a raw TCP next hop on 127.0.0.1 that runs script on each
// connection and counts the bytes it managed to send.
type hostile struct {
	ln   net.Listener
	sent atomic.Int64
}

func newHostile(t *testing.T, script func(c net.Conn, w io.Writer)) *hostile {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h := &hostile{ln: ln}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				script(c, &counter{w: c, n: &h.sent})
			}()
		}
	}()
	return h
}

type counter struct {
	w io.Writer
	n *atomic.Int64
}

func (c *counter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n.Add(int64(n))
	return n, err
}

// endless writes chunk until the client hangs up.
func endless(w io.Writer, chunk string) {
	b := []byte(strings.Repeat(chunk, 64<<10/len(chunk)+1))
	for {
		if _, err := w.Write(b); err != nil {
			return
		}
	}
}

// rssKB is a /proc/self/status field (VmRSS, VmHWM) in kB.
func rssKB(t *testing.T, field string) int64 {
	t.Helper()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Skip("no /proc")
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, field+":"); ok {
			var kb int64
			fmt.Sscan(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), &kb)
			return kb
		}
	}
	t.Fatalf("no %s in /proc/self/status", field)
	return 0
}

// A next hop that sends an endless greeting line, or endless "250-"
// lines, ends the session at the bound: the delivery is deferred with a
// clear reason and the client's memory does not grow with what the server
// sends (the issue saw 270 MB/s).
func TestHostileNextHopBounded(t *testing.T) {
	const budgetKB = 64 << 10 // peak RSS growth allowed, far above the few KB needed
	cases := []struct {
		name   string
		script func(c net.Conn, w io.Writer)
		want   string
	}{
		{"endless greeting line", func(c net.Conn, w io.Writer) {
			io.WriteString(w, "220 ")
			endless(w, "a")
		}, "sent a reply line longer than 2048 bytes while receiving the initial server greeting"},
		{"endless 220- greeting", func(c net.Conn, w io.Writer) {
			endless(w, "220-hello\r\n")
		}, "sent a reply of more than 100 lines while receiving the initial server greeting"},
		{"endless 250- EHLO reply", func(c net.Conn, w io.Writer) {
			io.WriteString(w, "220 hostile.test ESMTP\r\n")
			bufio.NewReader(c).ReadString('\n')
			endless(w, "250-PIPELINING\r\n")
		}, "sent a reply of more than 100 lines while performing the EHLO handshake"},
		{"endless RCPT reply line", func(c net.Conn, w io.Writer) {
			r := bufio.NewReader(c)
			io.WriteString(w, "220 hostile.test ESMTP\r\n")
			r.ReadString('\n')
			io.WriteString(w, "250 hostile.test\r\n")
			r.ReadString('\n')
			io.WriteString(w, "250 2.1.0 Ok\r\n")
			r.ReadString('\n')
			io.WriteString(w, "250 2.1.5 ")
			endless(w, "b")
		}, "sent a reply line longer than 2048 bytes while receiving the reply to RCPT TO"},
	}
	// Reset the peak (VmHWM) to the current RSS, so that what earlier
	// tests of the package used does not count (Linux 4.0+); where that is
	// not allowed, the peak since the process began is measured.
	os.WriteFile("/proc/self/clear_refs", []byte("5"), 0)
	base := rssKB(t, "VmRSS")
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := newHostile(t, tc.script)
			e := newEnv(t, func(e *env) {
				e.tm["hostile.test"] = "smtp:" + h.ln.Addr().String()
			})
			id := e.enqueue("alice@origin.test", "bob@hostile.test")
			m := e.waitAttempts(id, 1)
			r := m.Recipients[0]
			want := "host 127.0.0.1[127.0.0.1] " + tc.want
			if r.State != store.RcptPending || r.DSN != "4.5.0" || r.Reply != want {
				t.Fatalf("recipient %+v\nwant deferred 4.5.0 %q", r, want)
			}
			t.Logf("the server sent %d KB before the client hung up", h.sent.Load()>>10)
		})
	}
	grew := rssKB(t, "VmHWM") - base
	if grew > budgetKB {
		t.Errorf("peak RSS grew by %d MB, budget %d MB", grew>>10, budgetKB>>10)
	}
	t.Logf("peak RSS of the test process grew by %d KB (budget %d MB)", max(grew, 0), budgetKB>>10)
}

// The bound sees replies as they come, in any split.
func TestReplyBound(t *testing.T) {
	ok := "220-a\r\n220 b\r\n" + "250-" + strings.Repeat("x", MaxReplyLine-6) + "\r\n250 c\r\n"
	for split := 1; split < 9; split++ {
		if err := readAllReplies(ok, split); err != nil {
			t.Fatalf("split %d: %v", split, err)
		}
	}
	many := strings.Repeat("250-x\r\n", MaxReplyLines-1) + "250 end\r\n"
	if err := readAllReplies(many, 7); err != nil {
		t.Fatalf("%d lines: %v", MaxReplyLines, err)
	}
	for _, bad := range []string{
		"250-x\r\n" + many,
		"220 " + strings.Repeat("y", MaxReplyLine) + "\r\n",
	} {
		if err := readAllReplies(bad, 5); !errors.Is(err, errReplyLimit) {
			t.Errorf("%.20q...: got %v, want a reply limit error", bad, err)
		}
	}
}

// readAllReplies reads every reply of s through a replyBound, split
// bytes at a time.
func readAllReplies(s string, split int) error {
	b := &replyBound{r: &chunked{b: []byte(s), n: split}}
	tp := textproto.NewReader(bufio.NewReader(b))
	for {
		_, _, err := tp.ReadResponse(0)
		if err == io.EOF {
			return nil
		}
		var te *textproto.Error
		if err != nil && !errors.As(err, &te) {
			return err
		}
	}
}

// chunked reads b at most n bytes at a time.
type chunked struct {
	b []byte
	n int
}

func (c *chunked) Read(p []byte) (int, error) {
	if len(c.b) == 0 {
		return 0, io.EOF
	}
	k := copy(p[:min(len(p), c.n)], c.b)
	c.b = c.b[k:]
	return k, nil
}

// smtp_delivery_deadline bounds a transaction as a whole, whatever the
// stage limits allow: the next hop here takes 2s to answer the final dot
// (smtp_data_done_timeout allows 600s), the deadline is 300ms.
func TestDeliveryDeadline(t *testing.T) {
	e := newEnv(t, func(e *env) { e.o.Timeouts.Delivery = 300 * time.Millisecond })
	e.mta.Delay(2 * time.Second)
	id := e.enqueue("alice@origin.test", "bob@customer.test")
	m := e.waitAttempts(id, 1)
	want := "conversation with 127.0.0.1[127.0.0.1] timed out: the delivery took longer than smtp_delivery_deadline (300ms)"
	if r := m.Recipients[0]; r.State != store.RcptPending || r.Reply != want || r.DSN != "4.4.2" {
		t.Fatalf("%+v", r)
	}
}
