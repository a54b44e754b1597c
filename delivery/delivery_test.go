package delivery

import (
	"strings"
	"testing"
	"time"

	"github.com/holdfast-mta/holdfast/internal/testutil"
	"github.com/holdfast-mta/holdfast/store"
)

func TestDelivers(t *testing.T) {
	e := newEnv(t, nil)
	id := e.enqueue("alice@origin.test", "bob@customer.test", "carol@customer.test")
	e.waitGone(id)
	msgs := e.mta.Wait(1, 5*time.Second)
	if len(msgs) != 1 || strings.Join(msgs[0].To, ",") != "bob@customer.test,carol@customer.test" || msgs[0].From != "alice@origin.test" {
		t.Fatalf("received %+v", msgs)
	}
	if msgs[0].Helo != "relay.test" {
		t.Errorf("EHLO %q, want relay.test", msgs[0].Helo)
	}
	if !strings.Contains(string(msgs[0].Data), "Hello.") {
		t.Errorf("content: %q", msgs[0].Data)
	}
	logs := e.logs.String()
	for _, want := range []string{`"queue":"active"`, `"nrcpt":2`, `"status":"sent"`, `"to":"bob@customer.test"`, `"dsn":"2.0.0"`, `"queue_id":"` + string(id) + `"`} {
		if !strings.Contains(logs, want) {
			t.Errorf("log lacks %s:\n%s", want, logs)
		}
	}
}

// Customer down: each retry comes exactly at the backoff time, doubling
// from minimal_backoff_time up to maximal_backoff_time; back up: delivered
// at the next attempt.
func TestBackoffExact(t *testing.T) {
	e := newEnv(t, nil)
	e.mta.Down()
	id := e.enqueue("alice@origin.test", "bob@customer.test")
	now := t0
	for i, step := range []time.Duration{300, 600, 1200, 2400, 4000, 4000} {
		m := e.waitAttempts(id, i+1)
		r := m.Recipients[0]
		if want := now.Add(step * time.Second); !r.NextAttempt.Equal(want) {
			t.Fatalf("attempt %d: next attempt %v, want %v", i+1, r.NextAttempt, want)
		}
		if !strings.Contains(r.Reply, "Connection refused") || r.DSN != "4.4.1" || m.State != store.StateDeferred {
			t.Fatalf("attempt %d: %+v state %v", i+1, r, m.State)
		}
		// One second early: nothing happens.
		e.clock.Set(r.NextAttempt.Add(-time.Second))
		e.settle()
		if got, _ := e.s.Get(id); got.Recipients[0].Attempts != i+1 {
			t.Fatalf("attempted before its time: %+v", got.Recipients[0])
		}
		now = r.NextAttempt
		e.clock.Set(now)
	}
	e.waitAttempts(id, 7)
	e.mta.Up(t)
	m, _ := e.s.Get(id)
	e.clock.Set(m.Recipients[0].NextAttempt)
	e.waitGone(id)
	if n := len(e.mta.Wait(1, 5*time.Second)); n != 1 {
		t.Fatalf("received %d", n)
	}
}

// One transaction, three recipients: 250, 450, 550. The 550 bounces (a
// DSN goes to the sender's MTA), the 450 is deferred, the 250 is done.
func TestPerRecipientReplies(t *testing.T) {
	e := newEnv(t, nil)
	e.mta.Rcpt("temp@customer.test", testutil.Reply(450, "4.2.0 mailbox busy"))
	e.mta.Rcpt("bad@customer.test", testutil.Reply(550, "5.1.1 no such user"))
	id := e.enqueue("alice@origin.test", "ok@customer.test", "temp@customer.test", "bad@customer.test")
	m := e.waitMsg(id, "first attempt", func(m *store.Message) bool { return m != nil && m.Recipients[1].Attempts == 1 })
	if r := m.Recipients[0]; r.State != store.RcptDelivered {
		t.Errorf("ok: %+v", r)
	}
	if r := m.Recipients[1]; r.State != store.RcptPending || r.DSN != "4.2.0" || !strings.Contains(r.Reply, "450 4.2.0 mailbox busy (in reply to RCPT TO command)") || !r.NextAttempt.Equal(t0.Add(300*time.Second)) {
		t.Errorf("temp: %+v", r)
	}
	if r := m.Recipients[2]; r.State != store.RcptBounced || r.DSN != "5.1.1" {
		t.Errorf("bad: %+v", r)
	}
	got := e.mta.Wait(1, 5*time.Second)
	if len(got) != 1 || len(got[0].To) != 1 || got[0].To[0] != "ok@customer.test" {
		t.Fatalf("customer received %+v", got)
	}
	dsns := e.origin.Wait(1, 5*time.Second)
	if len(dsns) != 1 || dsns[0].From != "" || dsns[0].To[0] != "alice@origin.test" {
		t.Fatalf("origin received %+v", dsns)
	}
	d := parseDSN(t, dsns[0].Data)
	if d.subject != "Undelivered Mail Returned to Sender" || len(d.rcpts) != 1 {
		t.Fatalf("dsn: %+v", d)
	}
	r := d.rcpts[0]
	checkField(t, r, "Final-Recipient", "rfc822; bad@customer.test")
	checkField(t, r, "Action", "failed")
	checkField(t, r, "Status", "5.1.1")
	checkField(t, r, "Remote-MTA", "dns; 127.0.0.1")
	checkField(t, r, "Diagnostic-Code", "smtp; 550 5.1.1 no such user")
	checkField(t, d.msg, "Reporting-MTA", "dns; relay.test")
	checkField(t, d.msg, "X-Postfix-Queue-ID", string(id))
	checkField(t, d.msg, "X-Postfix-Sender", "rfc822; alice@origin.test")
	if !strings.Contains(d.text, "This is the mail system at host relay.test.") || !strings.Contains(d.text, "<bad@customer.test>: host 127.0.0.1[127.0.0.1] said: 550 5.1.1 no such user") {
		t.Errorf("notification text:\n%s", d.text)
	}
	if d.origType != "message/rfc822" || !strings.Contains(d.original, "Return-Path: <alice@origin.test>") || !strings.Contains(d.original, "Subject: test 3") {
		t.Errorf("original part %s:\n%s", d.origType, d.original)
	}
	if !strings.Contains(d.header.Get("In-Reply-To"), "@origin.test>") || d.header.Get("Auto-Submitted") != "auto-replied" {
		t.Errorf("dsn header %v", d.header)
	}
	// The deferred recipient is delivered at its retry time.
	e.mta.Rcpt("temp@customer.test", nil)
	e.clock.Set(t0.Add(300 * time.Second))
	e.waitGone(id)
	if got := e.mta.Wait(2, 5*time.Second); len(got) != 2 || got[1].To[0] != "temp@customer.test" {
		t.Fatalf("retry: %+v", got)
	}
}

// defer_transports: no connection until a flush forces the recipient.
func TestDeferTransports(t *testing.T) {
	e := newEnv(t, func(e *env) {
		e.tm["etrn.test"] = e.tm["customer.test"]
		e.tm["etrn.test"] = strings.Replace(e.tm["etrn.test"], "smtp:", "etrn-only:", 1)
		e.o.DeferTransports = []string{"etrn-only"}
	})
	id := e.enqueue("alice@origin.test", "bob@etrn.test")
	m := e.waitAttempts(id, 1)
	if r := m.Recipients[0]; r.Reply != "deferred transport" || r.DSN != "4.3.2" {
		t.Fatalf("%+v", r)
	}
	e.clock.Set(m.Recipients[0].NextAttempt)
	e.waitAttempts(id, 2)
	if e.mta.Conns() != 0 {
		t.Fatalf("connected %d times before the flush", e.mta.Conns())
	}
	res, err := e.s.Flush("etrn.test", false)
	if err != nil || res.Messages != 1 {
		t.Fatalf("flush: %+v %v", res, err)
	}
	e.d.Wake()
	e.waitGone(id)
	if e.mta.Conns() != 1 || len(e.mta.Messages()) != 1 {
		t.Fatalf("after flush: conns %d msgs %d", e.mta.Conns(), len(e.mta.Messages()))
	}
}

// A next hop whose server hangs up is dead: other mail for it is deferred
// without a connection; forced mail connects anyway.
func TestDeadDestination(t *testing.T) {
	e := newEnv(t, nil)
	e.mta.Hangup(true)
	id1 := e.enqueue("alice@origin.test", "a@customer.test")
	m := e.waitAttempts(id1, 1)
	if e.mta.Hangups() != 1 || !strings.Contains(m.Recipients[0].Reply, "while receiving the initial server greeting") {
		t.Fatalf("hangups %d reply %q", e.mta.Hangups(), m.Recipients[0].Reply)
	}
	dests, err := e.s.Dests()
	key := e.tm["customer.test"]
	if err != nil || !dests[key].DeadUntil.Equal(t0.Add(300*time.Second)) {
		t.Fatalf("dests %+v %v", dests, err)
	}
	e.clock.Advance(10 * time.Second)
	id2 := e.enqueue("alice@origin.test", "b@customer.test")
	m2 := e.waitAttempts(id2, 1)
	if r := m2.Recipients[0]; !strings.HasPrefix(r.Reply, "delivery temporarily suspended: lost connection with") {
		t.Fatalf("suspended: %+v", r)
	}
	if e.mta.Hangups() != 1 {
		t.Fatalf("connected to a dead destination: %d", e.mta.Hangups())
	}
	// The server is back, but the hop is still dead: a flush forces it.
	e.mta.Hangup(false)
	if _, err := e.s.Flush("customer.test", false); err != nil {
		t.Fatal(err)
	}
	e.d.Wake()
	e.waitGone(id1)
	e.waitGone(id2)
	if n := len(e.mta.Messages()); n != 2 {
		t.Fatalf("delivered %d", n)
	}
	if dests, _ := e.s.Dests(); !dests[key].DeadUntil.IsZero() {
		t.Fatalf("still dead after a good session: %+v", dests[key])
	}
}

// After maximal_queue_lifetime the pending recipient is returned with the
// deferral's 4.x.x status and Action: failed.
func TestExpiry(t *testing.T) {
	e := newEnv(t, func(e *env) { e.o.MaxQueueLifetime = 1000 * time.Second })
	e.mta.Down()
	id := e.enqueue("alice@origin.test", "bob@customer.test")
	for i := 1; i <= 3; i++ {
		m := e.waitAttempts(id, i)
		e.clock.Set(m.Recipients[0].NextAttempt) // 300, 900, 2100 s
	}
	e.waitGone(id)
	dsns := e.origin.Wait(1, 5*time.Second)
	if len(dsns) != 1 {
		t.Fatalf("no notice: %+v", dsns)
	}
	d := parseDSN(t, dsns[0].Data)
	checkField(t, d.rcpts[0], "Action", "failed")
	checkField(t, d.rcpts[0], "Status", "4.4.1")
	if !strings.Contains(d.rcpts[0].Get("Diagnostic-Code"), "Connection refused") {
		t.Errorf("diagnostic %q", d.rcpts[0].Get("Diagnostic-Code"))
	}
	if !strings.Contains(e.logs.String(), `"status":"expired"`) {
		t.Errorf("no expired log line")
	}
}

// A bounce of a bounce is never sent: the null sender's failures are
// logged and dropped.
func TestNullSenderNotBounced(t *testing.T) {
	e := newEnv(t, nil)
	e.mta.Rcpt("bad@customer.test", testutil.Reply(550, "5.1.1 no such user"))
	id := e.enqueue("", "bad@customer.test")
	e.waitGone(id) // a notice would have been queued by the same Finish
	if st, _ := e.s.Stats(); st.Incoming+st.Deferred+st.Active != 0 {
		t.Fatalf("something was queued: %+v", st)
	}
	if !strings.Contains(e.logs.String(), "null sender discarded") {
		t.Errorf("no log line for the dropped notice")
	}
}

// error: and discard: transports never connect.
func TestErrorAndDiscardTransports(t *testing.T) {
	e := newEnv(t, func(e *env) {
		e.tm["gone.test"] = "error:5.1.2 this domain is gone"
		e.tm["null.test"] = "discard:"
	})
	id := e.enqueue("alice@origin.test", "x@gone.test", "y@null.test")
	e.waitGone(id)
	d := parseDSN(t, e.origin.Wait(1, 5*time.Second)[0].Data)
	if len(d.rcpts) != 1 {
		t.Fatalf("dsn recipients %d", len(d.rcpts))
	}
	checkField(t, d.rcpts[0], "Status", "5.1.2")
	checkField(t, d.rcpts[0], "Diagnostic-Code", "X-Postfix; this domain is gone")
	if e.mta.Conns() != 0 {
		t.Fatal("connected")
	}
	if !strings.Contains(e.logs.String(), `"to":"y@null.test","relay":"none"`) {
		t.Errorf("no discard log line:\n%s", e.logs.String())
	}
}

// 100 messages for one next hop share at most the destination
// concurrency limit of connections.
func TestConnectionReuse(t *testing.T) {
	const limit = 5
	e := newEnv(t, func(e *env) { e.o.DefaultDestinationLimit, e.o.DestinationLimit = limit, nil })
	var ids []store.ID
	for i := 0; i < 100; i++ {
		ids = append(ids, e.enqueue("alice@origin.test", "bob@customer.test"))
	}
	if got := len(e.mta.Wait(100, 20*time.Second)); got != 100 {
		t.Fatalf("received %d of 100", got)
	}
	for _, id := range ids {
		e.waitGone(id)
	}
	if c := e.mta.Conns(); c > limit || c < 1 {
		t.Fatalf("%d connections for 100 messages, limit %d", c, limit)
	}
	if o := e.mta.MaxOpen(); o > limit {
		t.Fatalf("%d connections open at once, limit %d", o, limit)
	}
	t.Logf("100 messages over %d connections", e.mta.Conns())
}

// enqueueAdmitted queues a message through Admit, as serve does.
func (e *env) enqueueAdmitted(sender string, rcpts ...string) *store.Message {
	e.t.Helper()
	m := &store.Message{Sender: sender, Arrival: e.clock.Now()}
	for _, r := range rcpts {
		m.Recipients = append(m.Recipients, store.Recipient{Addr: r})
	}
	if err := e.d.Admit(e.s).Enqueue(m, []byte("Subject: admitted\r\n\r\nHello.\r\n")); err != nil {
		e.t.Fatal(err)
	}
	return m
}

// defer_transports on arrival: ETRN-only mail is stored deferred and
// indexed by its one commit, never leased, logged as a deferral; a flush
// then delivers it. A mixed message goes out at once for the others.
func TestDeferOnArrival(t *testing.T) {
	e := newEnv(t, func(e *env) {
		e.tm["etrn.test"] = strings.Replace(e.tm["customer.test"], "smtp:", "etrn-only:", 1)
		e.o.DeferTransports = []string{"etrn-only"}
	})
	m := e.enqueueAdmitted("alice@origin.test", "bob@etrn.test")
	got, err := e.s.Get(m.ID)
	if err != nil {
		t.Fatal(err)
	}
	r := got.Recipients[0]
	if got.State != store.StateDeferred || r.Attempts != 1 || r.Reply != "deferred transport" || r.DSN != "4.3.2" ||
		!r.NextAttempt.Equal(t0.Add(300*time.Second)) || !got.Due.Equal(r.NextAttempt) {
		t.Fatalf("after acceptance: %+v", got)
	}
	logs := e.logs.String()
	if !strings.Contains(logs, `"queue_id":"`+string(m.ID)+`"`) || !strings.Contains(logs, `"to":"bob@etrn.test","relay":"none"`) ||
		!strings.Contains(logs, `"dsn":"4.3.2","status":"deferred","reply":"deferred transport"`) {
		t.Fatalf("no deferral logged:\n%s", logs)
	}
	// Nothing due: the scheduler has no lease to take.
	e.settle()
	if st, _ := e.s.Stats(); st.Deferred != 1 || st.Incoming+st.Active != 0 || strings.Contains(e.logs.String(), `"leased"`) || e.mta.Conns() != 0 {
		t.Fatalf("leased or attempted before ETRN: %+v conns %d\n%s", st, e.mta.Conns(), e.logs.String())
	}

	// Mixed: customer.test now, etrn.test deferred on arrival.
	mixed := e.enqueueAdmitted("alice@origin.test", "carol@customer.test", "dave@etrn.test")
	left := e.waitMsg(mixed.ID, "mixed attempt", func(m *store.Message) bool {
		return m != nil && m.Recipients[0].State == store.RcptDelivered
	})
	if r := left.Recipients[1]; left.State != store.StateDeferred || r.Attempts != 1 || r.Reply != "deferred transport" {
		t.Fatalf("mixed after attempt: %+v", left)
	}
	if got := e.mta.Messages(); len(got) != 1 || len(got[0].To) != 1 || got[0].To[0] != "carol@customer.test" {
		t.Fatalf("mixed delivery: %+v", got)
	}

	// ETRN delivers both.
	res, err := e.s.Flush("etrn.test", false)
	if err != nil || res.Messages != 2 {
		t.Fatalf("flush: %+v %v", res, err)
	}
	e.d.Wake()
	e.waitGone(m.ID)
	e.waitGone(mixed.ID)
	if got := e.mta.Messages(); len(got) != 3 {
		t.Fatalf("after flush: %d messages", len(got))
	}
}
