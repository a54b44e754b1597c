package delivery

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/holdfast-mta/holdfast/internal/testutil"
	"github.com/holdfast-mta/holdfast/store"
)

// waiting reports whether an attempt of e waits for a session.
func (e *env) waiting() int {
	n := 0
	for _, p := range e.d.allPools() {
		p.mu.Lock()
		n += len(p.waiters)
		p.mu.Unlock()
	}
	return n
}

// waitWaiter makes the peer wait until an attempt waits for a session.
func (p *peer) waitWaiter(e *env) {
	if !testutil.WaitFor(10*time.Second, func() bool { return e.waiting() > 0 }) {
		p.errs <- fmt.Errorf("no attempt waits for a session")
	}
}

// oneTransaction answers a pipelined transaction of one recipient and
// its content with reply.
func (p *peer) oneTransaction(reply string) {
	p.line()
	p.line()
	p.expect("DATA")
	p.send("250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 go ahead\r\n")
	p.content()
	p.send(reply)
}

// outcome is what the log says of message id's recipient: status, DSN
// and reply (Postfix's "status=" line).
type outcome struct{ Status, DSN, Reply string }

// outcomeOf waits for the log line of id's outcome.
func (e *env) outcomeOf(id store.ID) outcome {
	e.t.Helper()
	var o outcome
	ok := testutil.WaitFor(10*time.Second, func() bool {
		for _, l := range strings.Split(e.logs.String(), "\n") {
			var v struct {
				QueueID string `json:"queue_id"`
				outcome
			}
			if json.Unmarshal([]byte(l), &v) == nil && v.QueueID == string(id) && v.Status != "" {
				o = v.outcome
				return true
			}
		}
		return false
	})
	if !ok {
		e.t.Fatalf("no outcome logged for %s:\n%s", id, e.logs.String())
	}
	return o
}

// owedRun delivers message x over a session of its own and, with next,
// a second message y that waits for that session (destination
// concurrency 1): x's content and final dot, then y's MAIL FROM, RCPT TO
// and DATA reach the peer before it sends x's end-of-data reply, reply
// ("" closes the connection instead, "silent" sends nothing until
// smtp_data_done_timeout, 1 s here, ends the session). A session that
// ends there (421, closed, silent) leaves y to a new session. It returns
// x's outcome.
func owedRun(t *testing.T, reply string, next bool) outcome {
	ready := make(chan *env, 1)
	first := make(chan string, 1)
	var sessions atomic.Int32
	addr, errs := newPeer(t, func(p *peer) {
		p.greet("PIPELINING")
		if sessions.Add(1) > 1 { // y, after the first session ended
			p.oneTransaction("250 2.0.0 Ok: queued as Y2\r\n")
			p.rest()
			return
		}
		e := <-ready
		first <- p.line()
		p.line()
		p.expect("DATA")
		if next {
			p.waitWaiter(e)
		}
		p.send("250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 go ahead\r\n")
		p.content()
		if next { // the next transaction, with the reply to the dot still owed
			for _, want := range []string{"MAIL FROM:<", "RCPT TO:<", "DATA"} {
				if l := p.line(); !strings.HasPrefix(l, want) {
					p.errs <- fmt.Errorf("after the dot %q, want %s", l, want)
				}
			}
		}
		switch reply {
		case "":
			return
		case "silent":
			p.c.SetReadDeadline(time.Now().Add(20 * time.Second))
			io.Copy(io.Discard, p.r) // until the client gives up
			return
		}
		p.send(reply)
		if strings.HasPrefix(reply, "421") {
			return
		}
		if next {
			p.send("250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 go ahead\r\n")
			p.content()
			p.send("250 2.0.0 Ok: queued as Y1\r\n")
		}
		p.rest()
	})
	e := newEnv(t, func(e *env) {
		e.tm["peer.test"] = "smtp:" + addr
		e.o.DefaultDestinationLimit, e.o.DestinationLimit = 1, nil
		if reply == "silent" {
			e.o.Timeouts.DataDone = time.Second
		}
	})
	ready <- e
	x := e.enqueue("x@origin.test", "a@peer.test")
	var y store.ID
	if next {
		y = e.enqueue("y@origin.test", "b@peer.test")
	}
	select {
	case mail := <-first:
		if strings.Contains(mail, "y@origin.test") { // y's attempt came first
			x, y = y, x
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no transaction")
	}
	o := e.outcomeOf(x)
	if next {
		e.waitGone(y)
	}
	noPeerErrors(t, errs)
	return o
}

// The final dot and the next transaction in one write (RFC 2920 sec
// 3.1): the outcome of the message whose end-of-data reply the next
// attempt read is the one it gets when it reads the reply itself, for
// every reply, and the next message is delivered, on the same session
// or, when the session ended at the reply, on a new one.
func TestHandOffOwedReply(t *testing.T) {
	cases := []struct{ name, reply, status string }{
		{"250", "250 2.0.0 Ok: queued as X\r\n", "sent"},
		{"450", "450 4.3.0 Try again later\r\n", "deferred"},
		{"550", "550 5.7.1 Content refused\r\n", "bounced"},
		{"421", "421 4.4.2 Closing\r\n", "deferred"},
		{"closed", "", "deferred"},
		{"timeout", "silent", "deferred"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			alone := owedRun(t, tc.reply, false)
			handed := owedRun(t, tc.reply, true)
			if handed != alone || alone.Status != tc.status {
				t.Errorf("with the hand-off %+v, alone %+v; want both %s", handed, alone, tc.status)
			}
		})
	}
}

// No hand-off without PIPELINING, nor over LMTP (one reply per
// recipient after the dot): with another attempt waiting for the
// session, the dot reaches the peer while that attempt still waits; it
// gets the session once the reply was read.
func TestNoHandOff(t *testing.T) {
	for _, lmtp := range []bool{false, true} {
		t.Run(fmt.Sprintf("lmtp=%v", lmtp), func(t *testing.T) {
			ready := make(chan *env, 1)
			addr, errs := newPeer(t, func(p *peer) {
				if lmtp {
					p.send("220 peer.test LMTP\r\n")
					p.expect("LHLO relay.test")
					p.send("250-peer.test\r\n250 PIPELINING\r\n")
				} else {
					p.greet()
				}
				e := <-ready
				tx := func(first bool) {
					p.line() // MAIL FROM: its reply is waited for without PIPELINING
					if first {
						p.waitWaiter(e)
					}
					p.send("250 2.1.0 Ok\r\n")
					p.line()
					p.send("250 2.1.5 Ok\r\n")
					p.expect("DATA")
					p.send("354 go ahead\r\n")
					p.content()
					if n := e.waiting(); first && (n != 1 || p.r.Buffered() > 0) {
						p.errs <- fmt.Errorf("after the dot: %d waiting, %d bytes buffered; want 1, 0", n, p.r.Buffered())
					}
					p.send("250 2.0.0 Ok\r\n")
				}
				tx(true)
				tx(false) // the waiting attempt, on the session put back
				p.rest()
			})
			scheme := "smtp:"
			if lmtp {
				scheme = "lmtp:"
			}
			e := newEnv(t, func(e *env) {
				e.tm["peer.test"] = scheme + addr
				e.o.DefaultDestinationLimit, e.o.DestinationLimit = 1, nil
			})
			ready <- e
			x := e.enqueue("x@origin.test", "a@peer.test")
			y := e.enqueue("y@origin.test", "b@peer.test")
			e.waitGone(x)
			e.waitGone(y)
			noPeerErrors(t, errs)
		})
	}
}

// Many messages over a few sessions to go-smtp's server, each final dot
// sent with the next transaction whenever an attempt waits: every
// message arrives, once, over no more sessions than the limit; over
// STARTTLS (level may) as in plaintext. With one delivery slot
// (delivery_concurrency_limit = 1) the attempt handed a session does not
// wait for the slot the attempt owed the reply holds: it reads the reply
// first.
func TestHandOffGoSMTP(t *testing.T) {
	const n = 40
	cases := []struct {
		name         string
		tls          bool
		limit, slots int
	}{
		{"plaintext", false, 2, 0},
		{"starttls", true, 2, 0},
		{"one slot", false, 1, 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, func(e *env) {
				e.mta = testutil.NewMTA(t, testutil.MTAOptions{TLS: tc.tls})
				e.tm["customer.test"] = "smtp:" + e.mta.Addr
				e.o.DefaultDestinationLimit, e.o.DestinationLimit = tc.limit, nil
				if tc.tls {
					e.o.TLSLevel = TLSMay
				}
				if tc.slots > 0 {
					e.o.Concurrency = tc.slots
				}
			})
			var ids []store.ID
			for i := range n {
				ids = append(ids, e.enqueue("a@origin.test", fmt.Sprintf("u%d@customer.test", i)))
			}
			for _, id := range ids {
				e.waitGone(id)
			}
			seen := map[string]bool{}
			for _, m := range e.mta.Wait(n, 10*time.Second) {
				if m.TLS != tc.tls {
					t.Errorf("TLS %v, want %v", m.TLS, tc.tls)
				}
				for _, r := range m.To {
					if seen[r] {
						t.Errorf("%s twice", r)
					}
					seen[r] = true
				}
			}
			if len(seen) != n || e.mta.MaxOpen() > tc.limit {
				t.Errorf("%d recipients at the sink, %d sessions at most; want %d, %d", len(seen), e.mta.MaxOpen(), n, tc.limit)
			}
		})
	}
}
