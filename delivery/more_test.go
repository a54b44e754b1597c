package delivery

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/holdfast-mta/holdfast/internal/testutil"
	"github.com/holdfast-mta/holdfast/store"
)

// waitActive waits until id is leased (in delivery).
func (e *env) waitActive(id store.ID) {
	e.t.Helper()
	testutil.Eventually(e.t, 10*time.Second, "the message to become active", func() bool {
		m, err := e.s.Get(id)
		return err == nil && m.State == store.StateActive
	})
}

// A crash (the store closed without Finish, then reopened) while the
// customer is receiving the message: the message is delivered again
// (at-least-once) and nothing is lost.
func TestCrashMidDelivery(t *testing.T) {
	e := newEnv(t, nil)
	entered, release := make(chan struct{}), make(chan struct{})
	first := true
	e.mta.OnData(func(testutil.Received) {
		if first {
			first = false
			close(entered)
			<-release
		}
	})
	id := e.enqueue("alice@origin.test", "bob@customer.test")
	<-entered
	path := testutil.StorePath(e.s)
	if err := e.s.Close(); err != nil { // the "crash": no Finish reaches the file
		t.Fatal(err)
	}
	close(release)
	if err := e.stop(); err != nil && !errors.Is(err, store.ErrClosed) {
		t.Fatal(err)
	}
	e.s = testutil.OpenStore(t, path, store.Options{NoSync: true, Now: e.clock.Now, Eligible: func(string) bool { return true }})
	m, err := e.s.Get(id)
	if err != nil || m.State != store.StateIncoming {
		t.Fatalf("after reopen: %+v %v", m, err)
	}
	e.start()
	e.d.Wake()
	e.waitGone(id)
	got := e.mta.Wait(2, 5*time.Second)
	if len(got) != 2 || got[0].To[0] != "bob@customer.test" || got[1].To[0] != "bob@customer.test" {
		t.Fatalf("received %+v", got)
	}
}

// Shutdown with a delivery stuck in DATA: Run returns within the grace
// period plus a little, and the message is back in the queue, not leased.
func TestShutdownUnleases(t *testing.T) {
	e := newEnv(t, func(e *env) { e.o.ShutdownGrace = 200 * time.Millisecond })
	entered, release := make(chan struct{}), make(chan struct{})
	defer close(release)
	var once bool
	e.mta.OnData(func(testutil.Received) {
		if !once {
			once = true
			close(entered)
		}
		<-release
	})
	id := e.enqueue("alice@origin.test", "bob@customer.test")
	<-entered
	start := time.Now()
	if err := e.stop(); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("shutdown took %v", d)
	}
	m, err := e.s.Get(id)
	if err != nil || m.State == store.StateActive || m.Recipients[0].Attempts != 0 {
		t.Fatalf("after shutdown: %+v %v", m, err)
	}
}

// A flush that arrives while the message is being delivered is not lost:
// the deferred recipient is retried as soon as the attempt ends.
func TestFlushWhileActive(t *testing.T) {
	e := newEnv(t, nil)
	e.mta.Data(testutil.Reply(451, "4.3.0 try again later"))
	e.mta.Delay(300 * time.Millisecond)
	id := e.enqueue("alice@origin.test", "bob@customer.test")
	e.waitActive(id)
	res, err := e.s.Flush("customer.test", false)
	if err != nil || res.Active != 1 {
		t.Fatalf("flush: %+v %v", res, err)
	}
	// The attempt fails (451); the flush that came meanwhile makes the
	// recipient due at once: a second attempt without any clock advance.
	m := e.waitAttempts(id, 2)
	if m.Recipients[0].DSN != "4.3.0" || e.clock.Now() != t0 {
		t.Fatalf("%+v", m.Recipients[0])
	}
	if got := len(e.mta.Messages()); got != 0 {
		t.Fatalf("received %d", got)
	}
}

// SIZE announced by the server: a larger message bounces (5.3.4) without
// a MAIL FROM.
func TestSizeLimit(t *testing.T) {
	e := newEnv(t, nil)
	small := testutil.NewMTA(t, testutil.MTAOptions{MaxMessageBytes: 50})
	e.tm["small.test"] = fmt.Sprintf("smtp:[127.0.0.1]:%d", small.Port)
	id := e.enqueue("alice@origin.test", "bob@small.test")
	e.waitGone(id)
	d := parseDSN(t, e.origin.Wait(1, 5*time.Second)[0].Data)
	checkField(t, d.rcpts[0], "Status", "5.3.4")
	if !strings.Contains(d.text, "exceeds size limit 50 of server") {
		t.Errorf("text: %s", d.text)
	}
	if len(small.Messages()) != 0 {
		t.Fatal("sent anyway")
	}
}

// STARTTLS: used when offered (may); required by encrypt, which defers
// mail for a server that does not offer it.
func TestStartTLS(t *testing.T) {
	e := newEnv(t, func(e *env) { e.o.TLSLevel = TLSMay })
	secure := testutil.NewMTA(t, testutil.MTAOptions{TLS: true})
	e.tm["secure.test"] = fmt.Sprintf("smtp:[127.0.0.1]:%d", secure.Port)
	e.enqueue("alice@origin.test", "bob@secure.test")
	e.enqueue("alice@origin.test", "bob@customer.test")
	if got := secure.Wait(1, 5*time.Second); len(got) != 1 || !got[0].TLS || got[0].Helo != "relay.test" {
		t.Fatalf("secure: %+v", got)
	}
	if got := e.mta.Wait(1, 5*time.Second); len(got) != 1 || got[0].TLS {
		t.Fatalf("plain: %+v", got)
	}

	e2 := newEnv(t, func(e *env) { e.o.TLSLevel = TLSEncrypt })
	id := e2.enqueue("alice@origin.test", "bob@customer.test")
	m := e2.waitAttempts(id, 1)
	if r := m.Recipients[0]; r.DSN != "4.7.4" || !strings.Contains(r.Reply, "TLS is required, but was not offered") {
		t.Fatalf("%+v", r)
	}
	if len(e2.mta.Messages()) != 0 {
		t.Fatal("sent in plaintext")
	}
}

// delay_warning_time: one "delayed" notice when WarnAt has passed, not
// two.
func TestDelayWarning(t *testing.T) {
	e := newEnv(t, func(e *env) {
		e.o.MinBackoff, e.o.MaxBackoff, e.o.DelayWarning = time.Hour, 8*time.Hour, 4*time.Hour
	})
	e.mta.Down()
	m := &store.Message{Sender: "alice@origin.test", Arrival: t0, WarnAt: t0.Add(4 * time.Hour),
		Recipients: []store.Recipient{{Addr: "bob@customer.test"}}}
	if err := e.s.Enqueue(m, []byte("Subject: slow\r\n\r\nbody\r\n")); err != nil {
		t.Fatal(err)
	}
	e.d.Wake()
	for i := 1; i <= 5; i++ { // attempts at 0, 1h, 3h, 7h (warning), 15h
		got := e.waitAttempts(m.ID, i)
		if i == 4 && !got.WarnAt.IsZero() {
			t.Fatalf("WarnAt not cleared: %v", got.WarnAt)
		}
		e.clock.Set(got.Recipients[0].NextAttempt)
	}
	e.waitAttempts(m.ID, 6)
	got := e.origin.Wait(2, 300*time.Millisecond)
	if len(got) != 1 {
		t.Fatalf("%d notices", len(got))
	}
	d := parseDSN(t, got[0].Data)
	if d.subject != "Delayed Mail (still being retried)" || d.origType != "text/rfc822-headers" {
		t.Fatalf("notice %q %q", d.subject, d.origType)
	}
	checkField(t, d.rcpts[0], "Action", "delayed")
	checkField(t, d.rcpts[0], "Will-Retry-Until", t0.Add(5*24*time.Hour).Format(time.RFC1123Z))
	if !strings.Contains(d.text, "could not be delivered for more than 4 hour(s)") || !strings.Contains(d.text, "until it is 5 day(s) old") {
		t.Errorf("text:\n%s", d.text)
	}
}

// Only due recipients are attempted: after a flush of one domain the other
// domain's deferred recipient waits for its own time.
func TestOnlyDueRecipients(t *testing.T) {
	e := newEnv(t, func(e *env) {
		e.tm["etrn.test"] = strings.Replace(e.tm["customer.test"], "smtp:", "etrn-only:", 1)
		e.o.DeferTransports = []string{"etrn-only"}
	})
	e.mta.RcptAll(testutil.Reply(450, "4.2.0 busy"))
	id := e.enqueue("alice@origin.test", "a@customer.test", "b@etrn.test")
	e.waitAttempts(id, 1)
	conns := e.mta.Conns()
	if _, err := e.s.Flush("etrn.test", false); err != nil {
		t.Fatal(err)
	}
	e.d.Wake()
	m := e.waitMsg(id, "flushed attempt", func(m *store.Message) bool { return m != nil && m.Recipients[1].Attempts == 2 })
	if m.Recipients[0].Attempts != 1 {
		t.Fatalf("customer.test recipient attempted too: %+v", m.Recipients[0])
	}
	if e.mta.Conns() != conns+1 && e.mta.Conns() != conns {
		t.Fatalf("conns %d -> %d", conns, e.mta.Conns())
	}
}

// smtp_data_done_timeout: a server that does not answer the final dot in
// time defers the message with Postfix's wording.
func TestDataDoneTimeout(t *testing.T) {
	e := newEnv(t, func(e *env) { e.o.Timeouts.DataDone = 150 * time.Millisecond })
	e.mta.Delay(time.Second)
	id := e.enqueue("alice@origin.test", "bob@customer.test")
	m := e.waitAttempts(id, 1)
	want := "conversation with 127.0.0.1[127.0.0.1] timed out while sending end of data -- message may be sent more than once"
	if r := m.Recipients[0]; r.Reply != want || r.DSN != "4.4.2" {
		t.Fatalf("%+v", r)
	}
}

// The dead list is kept in the store: a restarted scheduler still skips
// the hop until its time.
func TestDeadListSurvivesRestart(t *testing.T) {
	e := newEnv(t, nil)
	e.mta.Hangup(true)
	id := e.enqueue("alice@origin.test", "a@customer.test")
	e.waitAttempts(id, 1)
	if err := e.stop(); err != nil {
		t.Fatal(err)
	}
	e.start()
	e.mta.Hangup(false)
	id2 := e.enqueue("alice@origin.test", "b@customer.test")
	m := e.waitAttempts(id2, 1)
	if r := m.Recipients[0]; !strings.HasPrefix(r.Reply, "delivery temporarily suspended: ") || e.mta.Conns() != 0 {
		t.Fatalf("%+v conns %d", r, e.mta.Conns())
	}
	e.clock.Set(t0.Add(300 * time.Second)) // dead until then; both due
	e.waitGone(id)
	e.waitGone(id2)
}

// SMTPUTF8 mail to a server without SMTPUTF8: sent as plain SMTP when
// nothing in it needs UTF-8, returned (5.6.7) when an address does.
func TestSMTPUTF8Downgrade(t *testing.T) {
	e := newEnv(t, nil)
	for _, rcpt := range []string{"ascii@customer.test", "jörg@customer.test"} {
		m := &store.Message{Sender: "alice@origin.test", SMTPUTF8: true, Recipients: []store.Recipient{{Addr: rcpt}}}
		if err := e.s.Enqueue(m, []byte("Subject: hi\r\n\r\nbody\r\n")); err != nil {
			t.Fatal(err)
		}
		e.d.Wake()
		e.waitGone(m.ID)
	}
	if got := e.mta.Messages(); len(got) != 1 || got[0].To[0] != "ascii@customer.test" {
		t.Fatalf("received %+v", got)
	}
	d := parseDSN(t, e.origin.Wait(1, 5*time.Second)[0].Data)
	checkField(t, d.rcpts[0], "Status", "5.6.7")
}

// A slow destination does not hold up another one: messages waiting for
// the slow hop's connection take no global transaction slot.
func TestSlowDestinationDoesNotBlockOthers(t *testing.T) {
	slow := testutil.NewMTA(t, testutil.MTAOptions{})
	slow.Delay(150 * time.Millisecond)
	e := newEnv(t, func(e *env) {
		e.o.Concurrency = 2
		e.o.DestinationLimit = func(transport string) int {
			if transport == "slow" {
				return 1
			}
			return 20
		}
		e.tm["slow.test"] = fmt.Sprintf("slow:[127.0.0.1]:%d", slow.Port)
		e.o.TransportDefs = map[string]*Transport{"slow": {Kind: KindSMTP}} // a master.cf smtp service
	})
	for i := 0; i < 10; i++ {
		e.enqueue("alice@origin.test", "x@slow.test")
	}
	slow.Wait(1, 5*time.Second) // the burst is under way
	start := time.Now()
	id := e.enqueue("alice@origin.test", "bob@customer.test")
	e.waitGone(id)
	if d := time.Since(start); d > time.Second {
		t.Fatalf("fast destination waited %v behind the slow one", d)
	}
	if n := len(slow.Messages()); n >= 10 {
		t.Fatalf("slow burst already over (%d): the test proves nothing", n)
	}
	if got := len(slow.Wait(10, 10*time.Second)); got != 10 {
		t.Fatalf("slow hop received %d of 10", got)
	}
	if slow.MaxOpen() != 1 {
		t.Fatalf("slow hop had %d connections at once, limit 1", slow.MaxOpen())
	}
}

// A cached session that the server closed while idle (421 idle timeout)
// is replaced by a new one at once; the message is not deferred.
func TestIdleSessionClosedByServer(t *testing.T) {
	e := newEnv(t, func(e *env) { e.o.ConnCacheTime = 10 * time.Second })
	quick := testutil.NewMTA(t, testutil.MTAOptions{ReadTimeout: 100 * time.Millisecond})
	e.tm["quick.test"] = fmt.Sprintf("smtp:[127.0.0.1]:%d", quick.Port)
	e.waitGone(e.enqueue("alice@origin.test", "a@quick.test"))
	testutil.Eventually(t, 10*time.Second, "the server to hang up the idle session", func() bool { return quick.Open() == 0 })
	id := e.enqueue("alice@origin.test", "b@quick.test")
	e.waitGone(id)
	if got := len(quick.Messages()); got != 2 || quick.Conns() != 2 {
		t.Fatalf("messages %d conns %d", got, quick.Conns())
	}
}

// A force-expired message is returned at its next attempt without a
// connection.
func TestForceExpired(t *testing.T) {
	e := newEnv(t, nil)
	m := &store.Message{Sender: "alice@origin.test", Expired: true, Recipients: []store.Recipient{{Addr: "bob@customer.test"}}}
	if err := e.s.Enqueue(m, []byte("Subject: old\r\n\r\nbody\r\n")); err != nil {
		t.Fatal(err)
	}
	e.d.Wake()
	e.waitGone(m.ID)
	d := parseDSN(t, e.origin.Wait(1, 5*time.Second)[0].Data)
	checkField(t, d.rcpts[0], "Action", "failed")
	checkField(t, d.rcpts[0], "Status", "4.4.7")
	if e.mta.Conns() != 0 {
		t.Fatal("connected")
	}
}

// events records the scheduler's Events calls.
type events struct {
	mu       sync.Mutex
	outcomes []string
	attempts int
}

func (ev *events) Outcome(id store.ID, addr, status string) {
	ev.mu.Lock()
	defer ev.mu.Unlock()
	ev.outcomes = append(ev.outcomes, string(id)+" "+addr+" "+status)
}

func (ev *events) ObserveDelivery(d time.Duration) {
	ev.mu.Lock()
	defer ev.mu.Unlock()
	ev.attempts++
}

// wait returns the outcomes once there are n of them (or after 10 s) and
// the number of transactions observed.
func (ev *events) wait(n int) ([]string, int) {
	var got []string
	var k int
	testutil.WaitFor(10*time.Second, func() bool {
		ev.mu.Lock()
		defer ev.mu.Unlock()
		got, k = append([]string(nil), ev.outcomes...), ev.attempts
		return len(got) >= n
	})
	return got, k
}

// Events: one Outcome per recipient outcome after the commit (sent,
// deferred, bounced; expired at the end of the lifetime), one
// ObserveDelivery per SMTP transaction.
func TestEvents(t *testing.T) {
	ev := &events{}
	e := newEnv(t, func(e *env) { e.o.Events, e.o.MaxQueueLifetime = ev, time.Hour })
	e.mta.Rcpt("temp@customer.test", testutil.Reply(450, "4.2.0 mailbox busy"))
	e.mta.Rcpt("bad@customer.test", testutil.Reply(550, "5.1.1 no such user"))
	id := e.enqueue("", "ok@customer.test", "temp@customer.test", "bad@customer.test")
	p := string(id) + " "
	want := []string{p + "ok@customer.test sent", p + "temp@customer.test deferred", p + "bad@customer.test bounced"}
	got, n := ev.wait(3)
	if strings.Join(got, "|") != strings.Join(want, "|") || n != 1 {
		t.Fatalf("outcomes %q, %d transactions; want %q, 1", got, n, want)
	}
	e.clock.Set(t0.Add(time.Hour)) // past bounce_queue_lifetime (null sender)
	e.d.Wake()
	e.waitGone(id)
	if got, _ = ev.wait(4); len(got) != 4 || got[3] != p+"temp@customer.test expired" {
		t.Fatalf("outcomes %q", got)
	}
}
