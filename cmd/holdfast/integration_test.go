package main

// Integration tests of the fast-flush service (issue 6) on the seed's
// configuration: the whole relay (store, flush, delivery, smtpd) wired by
// startDaemon as `holdfast serve` wires it, SMTP on loopback, and go-smtp's
// server (testutil.MTA) as the customer's mail server.

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/textproto"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/holdfast-mta/holdfast/config"
	"github.com/holdfast-mta/holdfast/control"
	"github.com/holdfast-mta/holdfast/internal/testutil"
	"github.com/holdfast-mta/holdfast/store"
)

// seedConfig is the seed's main.cf: ETRN-only customers whose mail waits
// in the queue until they ask for it. %[1]s is the queue directory, %[2]s
// the transport table file.
const seedConfig = `
myhostname = relay.test
mydomain = relay.test
mynetworks = 127.0.0.0/8
relay_domains = customer.tld, other.tld, empty.tld, d0.tld, d1.tld, d2.tld, d3.tld, d4.tld, d5.tld, d6.tld, d7.tld
fast_flush_domains = $relay_domains
defer_transports = etrn-only
transport_maps = texthash:%[2]s
smtpd_etrn_restrictions = permit_mynetworks, reject
smtpd_listen = 127.0.0.1:0
queue_directory = %[1]s
control_socket =
log_format = json
shutdown_timeout = 10s
`

// relay is a running daemon plus the customer's MTA its transport table
// points at.
type relay struct {
	t   testing.TB
	d   *daemon
	mta *testutil.MTA
	// addr is the relay's SMTP address.
	addr string
}

// newRelay starts the daemon with the seed configuration; extra lines are
// appended to main.cf (later lines win).
func newRelay(t *testing.T, extra ...string) *relay {
	t.Helper()
	return startRelay(t, t.TempDir(), testutil.NewMTA(t, testutil.MTAOptions{}), extra...)
}

// startRelay starts a daemon whose files (queue, transport table) are in
// dir, so that a test can stop it and start another on the same queue.
func startRelay(t testing.TB, dir string, mta *testutil.MTA, extra ...string) *relay {
	t.Helper()
	next := fmt.Sprintf("etrn-only:[%s]:%d", mta.Host, mta.Port)
	var tbl strings.Builder
	for _, d := range []string{"customer.tld", ".customer.tld", "other.tld", "empty.tld"} {
		fmt.Fprintf(&tbl, "%s %s\n", d, next)
	}
	for i := range 8 {
		fmt.Fprintf(&tbl, "d%d.tld %s\n", i, next)
	}
	tpath := filepath.Join(dir, "transport")
	if err := os.WriteFile(tpath, []byte(tbl.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	text := fmt.Sprintf(seedConfig, filepath.Join(dir, "queue"), tpath) + strings.Join(extra, "\n") + "\n"
	c, err := config.Parse(filepath.Join(dir, "holdfast.cf"), []byte(text))
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	log := zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.InfoLevel)
	d, err := startDaemon(c, log)
	if err != nil {
		t.Fatalf("startDaemon: %v", err)
	}
	r := &relay{t: t, d: d, mta: mta, addr: d.smtpAddrs()[0]}
	t.Cleanup(r.stop)
	return r
}

// stop checks the store and shuts the daemon down; later calls do nothing.
func (r *relay) stop() {
	if r.d == nil {
		return
	}
	if err := r.d.store.Check(); err != nil {
		r.t.Errorf("store check at end: %v", err)
	}
	if err := r.d.shutdown(); err != nil {
		r.t.Errorf("shutdown: %v", err)
	}
	r.d = nil
}

// check asserts the store's invariants: bbolt's own check and the flush
// index equal to the records.
func (r *relay) check() {
	r.t.Helper()
	if err := r.d.store.Check(); err != nil {
		r.t.Fatalf("store check: %v", err)
	}
}

// stats returns the queue counters.
func (r *relay) stats() store.Stats {
	r.t.Helper()
	s, err := r.d.store.Stats()
	if err != nil {
		r.t.Fatalf("stats: %v", err)
	}
	return s
}

// waitFor polls cond every 10 ms until it holds or d passes.
func (r *relay) waitFor(what string, d time.Duration, cond func(store.Stats) bool) store.Stats {
	r.t.Helper()
	var s store.Stats
	if !testutil.WaitFor(d, func() bool { s = r.stats(); return cond(s) }) {
		r.t.Fatalf("timed out after %v waiting for %s; queue: %+v", d, what, s)
	}
	return s
}

// waitDeferred waits until n messages are deferred and none is pending
// an attempt.
func (r *relay) waitDeferred(n int64) {
	r.t.Helper()
	r.waitFor(fmt.Sprintf("%d deferred", n), 10*time.Second, func(s store.Stats) bool {
		return s.Deferred == n && s.Incoming == 0 && s.Active == 0
	})
}

// waitEmpty waits until the queue is empty.
func (r *relay) waitEmpty() {
	r.t.Helper()
	r.waitFor("an empty queue", 10*time.Second, func(s store.Stats) bool {
		return s.Incoming+s.Active+s.Deferred+s.Hold == 0
	})
}

// client is a line-level SMTP client, so that tests see the exact replies.
type client struct {
	t    testing.TB
	conn *textproto.Conn
}

func (r *relay) dial() *client {
	r.t.Helper()
	return dialSMTP(r.t, r.addr)
}

func dialSMTP(t testing.TB, addr string) *client {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	nc.SetDeadline(time.Now().Add(60 * time.Second))
	c := &client{t: t, conn: textproto.NewConn(nc)}
	t.Cleanup(func() { c.conn.Close() })
	if got := c.reply(); !strings.HasPrefix(got, "220 ") {
		t.Fatalf("greeting %q", got)
	}
	return c
}

// reply reads one reply and returns its last line ("250 Queuing started");
// the lines of a multi-line reply before it are dropped.
func (c *client) reply() string {
	c.t.Helper()
	for {
		line, err := c.conn.ReadLine()
		if err != nil {
			c.t.Fatalf("read reply: %v", err)
		}
		if len(line) < 4 || line[3] != '-' {
			return line
		}
	}
}

// lines sends one command and returns every line of the reply.
func (c *client) lines(format string, args ...any) []string {
	c.t.Helper()
	if err := c.conn.PrintfLine(format, args...); err != nil {
		c.t.Fatalf("send: %v", err)
	}
	var out []string
	for {
		line, err := c.conn.ReadLine()
		if err != nil {
			c.t.Fatalf("read reply: %v", err)
		}
		out = append(out, line)
		if len(line) < 4 || line[3] != '-' {
			return out
		}
	}
}

// cmd sends one command line and returns the reply's last line.
func (c *client) cmd(format string, args ...any) string {
	c.t.Helper()
	if err := c.conn.PrintfLine(format, args...); err != nil {
		c.t.Fatalf("send: %v", err)
	}
	return c.reply()
}

// expect sends a command and fails the test unless the reply is want.
func (c *client) expect(want, format string, args ...any) {
	c.t.Helper()
	if got := c.cmd(format, args...); got != want {
		c.t.Fatalf("%s: got %q, want %q", fmt.Sprintf(format, args...), got, want)
	}
}

// send submits one message through the relay and returns its subject.
func (r *relay) send(from string, to ...string) string {
	r.t.Helper()
	c := r.dial()
	if got := c.cmd("EHLO client.test"); !strings.HasPrefix(got, "250 ") {
		r.t.Fatalf("EHLO: %q", got)
	}
	subject := fmt.Sprintf("msg %s %d", strings.Join(to, ","), time.Now().UnixNano())
	if got := c.cmd("MAIL FROM:<%s>", from); !strings.HasPrefix(got, "250") {
		r.t.Fatalf("MAIL: %q", got)
	}
	for _, rc := range to {
		if got := c.cmd("RCPT TO:<%s>", rc); !strings.HasPrefix(got, "250") {
			r.t.Fatalf("RCPT %s: %q", rc, got)
		}
	}
	if got := c.cmd("DATA"); !strings.HasPrefix(got, "354") {
		r.t.Fatalf("DATA: %q", got)
	}
	if got := c.cmd("Subject: %s\r\nFrom: %s\r\n\r\nhello\r\n.", subject, from); !strings.HasPrefix(got, "250 2.0.0 Ok: queued as ") {
		r.t.Fatalf("end of DATA: %q", got)
	}
	c.cmd("QUIT")
	return subject
}

// etrn opens a session, sends EHLO and ETRN arg, and returns the reply.
func (r *relay) etrn(arg string) string {
	r.t.Helper()
	c := r.dial()
	c.cmd("EHLO client.test")
	got := c.cmd("ETRN %s", arg)
	c.cmd("QUIT")
	return got
}

// subjects counts the received messages by Subject header.
func subjects(msgs []testutil.Received) map[string]int {
	out := map[string]int{}
	for _, m := range msgs {
		for _, line := range strings.Split(string(m.Data), "\r\n") {
			if s, ok := strings.CutPrefix(line, "Subject: "); ok {
				out[s]++
				break
			}
		}
	}
	return out
}

// quiet asserts that the MTA saw no connection during d.
func (r *relay) quiet(d time.Duration) {
	r.t.Helper()
	before := r.mta.Conns()
	time.Sleep(d)
	if n := r.mta.Conns(); n != before {
		r.t.Fatalf("%d connection(s) reached the customer's server", n-before)
	}
}

// Seed step 1: ETRN for a domain with deferred mail starts delivery; mail
// for an ETRN-only domain is never attempted before.
func TestSeedETRNDeliversQueuedMail(t *testing.T) {
	r := newRelay(t)
	var subj []string
	for i := range 3 {
		subj = append(subj, r.send("a@sender.test", fmt.Sprintf("u%d@customer.tld", i)))
	}
	r.waitDeferred(3)
	r.check()
	r.quiet(300 * time.Millisecond) // defer_transports: never attempted before ETRN
	r.check()

	start := time.Now()
	if got := r.etrn("customer.tld"); got != "250 Queuing started" {
		t.Fatalf("ETRN: %q", got)
	}
	got := r.mta.Wait(3, 10*time.Second)
	t.Logf("3 messages delivered %v after ETRN", time.Since(start))
	counts := subjects(got)
	for _, s := range subj {
		if counts[s] != 1 {
			t.Errorf("message %q delivered %d times", s, counts[s])
		}
	}
	r.waitEmpty()
	r.check()
}

// Seed step 1, second half: the customer's server is down; flushed mail
// returns to deferred, stays indexed, and a later ETRN delivers it.
func TestSeedETRNCustomerDown(t *testing.T) {
	r := newRelay(t)
	r.mta.Down()
	a := r.send("a@sender.test", "down@customer.tld")
	b := r.send("a@sender.test", "down2@customer.tld")
	r.waitDeferred(2)
	r.check()

	if got := r.etrn("customer.tld"); got != "250 Queuing started" {
		t.Fatalf("ETRN (down): %q", got)
	}
	// The forced attempt fails: both messages back to deferred, with the
	// connection error as the reason and the one-shot mark used up.
	backToDeferred := func() bool {
		ms, _, err := r.d.store.List(store.Filter{States: []store.State{store.StateDeferred}}, "", 10)
		if err != nil {
			t.Fatal(err)
		}
		tried := 0
		for _, m := range ms {
			if rc := m.Recipients[0]; !rc.Forced && strings.Contains(rc.Reply, "connect to ") {
				tried++
			}
		}
		return tried == 2
	}
	if !testutil.WaitFor(10*time.Second, backToDeferred) {
		t.Fatalf("flushed mail not back to deferred: %+v", r.stats())
	}
	r.waitDeferred(2)
	r.check() // still indexed: the index equals the records

	r.mta.Up(t)
	r.quiet(200 * time.Millisecond) // not retried on its own before its time
	if got := r.etrn("customer.tld"); got != "250 Queuing started" {
		t.Fatalf("ETRN (up): %q", got)
	}
	counts := subjects(r.mta.Wait(2, 10*time.Second))
	if counts[a] != 1 || counts[b] != 1 {
		t.Fatalf("deliveries after ETRN: %v", counts)
	}
	r.waitEmpty()
	r.check()
}

// Seed step 2: ETRN for an eligible domain without mail is 250 and makes
// no delivery attempt of anything.
func TestSeedETRNEligibleNoMail(t *testing.T) {
	r := newRelay(t)
	other := r.send("a@sender.test", "u@other.tld")
	r.waitDeferred(1)
	for _, d := range []string{"empty.tld", "customer.tld", "sub.customer.tld", "@empty.tld"} {
		if got := r.etrn(d); got != "250 Queuing started" {
			t.Errorf("ETRN %s: %q", d, got)
		}
	}
	r.quiet(300 * time.Millisecond)
	if s := r.stats(); s.Deferred != 1 {
		t.Fatalf("queue changed: %+v", s)
	}
	r.check()
	_ = other
}

// Seed step 3: a domain that is not a customer's gets 459.
func TestSeedETRNNotACustomer(t *testing.T) {
	r := newRelay(t)
	c := r.dial()
	c.cmd("EHLO client.test")
	c.expect("459 <not.a.customer.domain>: service unavailable", "ETRN not.a.customer.domain")
	c.expect("459 <Not.A.Customer.Domain>: service unavailable", "ETRN @Not.A.Customer.Domain")
	c.expect("459 <[127.0.0.1]>: service unavailable", "ETRN [127.0.0.1]")
	c.expect("501 Error: invalid parameter syntax", "ETRN customer.tld.")
	c.expect("500 Syntax: ETRN domain", "ETRN")
	c.expect("250 Queuing started", "ETRN CUSTOMER.TLD")
	r.quiet(100 * time.Millisecond)
}

// ETRN is announced in EHLO only when fast flush is configured; ETRN
// before HELO is accepted unless smtpd_helo_required = yes (spec §1.2).
func TestETRNAnnouncementAndHelo(t *testing.T) {
	has := func(lines []string) bool {
		for _, l := range lines {
			if len(l) > 4 && l[4:] == "ETRN" {
				return true
			}
		}
		return false
	}
	r := newRelay(t)
	c := r.dial()
	c.expect("250 Queuing started", "ETRN customer.tld") // before HELO
	if !has(c.lines("EHLO client.test")) {
		t.Error("ETRN not announced with fast_flush_domains set")
	}

	r = newRelay(t, "fast_flush_domains =")
	c = r.dial()
	if lines := c.lines("EHLO client.test"); has(lines) {
		t.Errorf("ETRN announced with fast flush off: %q", lines)
	}
	c.expect("459 <customer.tld>: service unavailable", "ETRN customer.tld")

	r = newRelay(t, "smtpd_helo_required = yes")
	c = r.dial()
	c.expect("503 Error: send HELO/EHLO first", "ETRN customer.tld")
	c.cmd("HELO client.test")
	c.expect("250 Queuing started", "ETRN customer.tld")
}

// ETRN in the middle of a mail transaction is refused (spec §1.2 row 3).
func TestETRNInTransaction(t *testing.T) {
	r := newRelay(t)
	c := r.dial()
	c.cmd("EHLO client.test")
	c.cmd("MAIL FROM:<a@sender.test>")
	c.expect("503 Error: MAIL transaction in progress", "ETRN customer.tld")
	c.cmd("RSET")
	c.expect("250 Queuing started", "ETRN customer.tld")
}

// ETRN @domain flushes the domain and its sub-domains in one range scan;
// plain ETRN the domain only.
func TestETRNSubtree(t *testing.T) {
	r := newRelay(t)
	top := r.send("a@sender.test", "u@customer.tld")
	sub := r.send("a@sender.test", "u@sub.customer.tld")
	deep := r.send("a@sender.test", "u@a.b.customer.tld")
	other := r.send("a@sender.test", "u@other.tld")
	r.waitDeferred(4)

	if got := r.etrn("sub.customer.tld"); got != "250 Queuing started" {
		t.Fatalf("ETRN sub: %q", got)
	}
	counts := subjects(r.mta.Wait(1, 10*time.Second))
	if counts[sub] != 1 || len(counts) != 1 {
		t.Fatalf("ETRN sub.customer.tld delivered %v", counts)
	}
	r.waitDeferred(3)
	r.check()

	if got := r.etrn("@customer.tld"); got != "250 Queuing started" {
		t.Fatalf("ETRN @customer.tld: %q", got)
	}
	counts = subjects(r.mta.Wait(3, 10*time.Second))
	if counts[top] != 1 || counts[deep] != 1 || counts[other] != 0 {
		t.Fatalf("ETRN @customer.tld delivered %v", counts)
	}
	r.waitDeferred(1)
	r.check()
	r.quiet(200 * time.Millisecond)
	if n := len(r.mta.Messages()); n != 3 {
		t.Fatalf("%d messages delivered, want 3", n)
	}
}

// A message with recipients in two domains: ETRN for one expedites only
// that domain's recipient (Postfix retries the whole message, §6).
func TestETRNOnlyFlushedDomain(t *testing.T) {
	r := newRelay(t)
	subj := r.send("a@sender.test", "u@customer.tld", "v@other.tld")
	r.waitDeferred(1)
	if got := r.etrn("customer.tld"); got != "250 Queuing started" {
		t.Fatalf("ETRN: %q", got)
	}
	got := r.mta.Wait(1, 10*time.Second)
	if len(got) != 1 || len(got[0].To) != 1 || got[0].To[0] != "u@customer.tld" {
		t.Fatalf("delivered %+v", got)
	}
	r.waitDeferred(1)
	r.check()
	if got := r.etrn("other.tld"); got != "250 Queuing started" {
		t.Fatalf("ETRN other: %q", got)
	}
	got = r.mta.Wait(2, 10*time.Second)
	if len(got) != 2 || got[1].To[0] != "v@other.tld" || subjects(got)[subj] != 2 {
		t.Fatalf("delivered %+v", got)
	}
	r.waitEmpty()
	r.check()
}

// An ETRN that arrives while the destination's mail is being delivered is
// not lost (Postfix skips active messages, §6.9): when that attempt fails
// the message is retried at once, without another ETRN.
func TestETRNWhileActiveRetriesAtOnce(t *testing.T) {
	r := newRelay(t)
	subj := r.send("a@sender.test", "u@customer.tld")
	r.waitDeferred(1)
	r.mta.Data(testutil.Reply(451, "4.3.0 try again later"))
	r.mta.Delay(time.Second)
	sent := r.mta.Contents()
	if got := r.etrn("customer.tld"); got != "250 Queuing started" {
		t.Fatalf("first ETRN: %q", got)
	}
	r.waitFor("the message to be active", 5*time.Second, func(s store.Stats) bool { return s.Active == 1 })
	testutil.Eventually(t, 10*time.Second, "the attempt to wait for its DATA reply (451)", func() bool { return r.mta.Contents() > sent })
	res, err := r.d.flush.Flush("customer.tld", false)
	if err != nil || res.Messages != 1 || res.Active != 1 {
		t.Fatalf("flush while active = %+v, %v", res, err)
	}
	r.mta.Data(nil) // the retry is accepted
	// Without the mark the 451 would defer it for minimal_backoff_time.
	if got := subjects(r.mta.Wait(1, 10*time.Second)); got[subj] != 1 {
		t.Fatalf("not retried after the failed attempt: %v; queue %+v", got, r.stats())
	}
	r.waitEmpty()
	r.check()
}

// etrn_reply_counts = yes answers with RFC 1985's 251 and 253.
func TestETRNReplyCounts(t *testing.T) {
	r := newRelay(t, "etrn_reply_counts = yes")
	r.send("a@sender.test", "u1@customer.tld")
	r.send("a@sender.test", "u2@customer.tld")
	r.waitDeferred(2)
	c := r.dial()
	c.cmd("EHLO client.test")
	c.expect("251 OK, no messages waiting for node empty.tld", "ETRN empty.tld")
	c.expect("253 OK, 2 pending messages for node customer.tld started", "ETRN customer.tld")
	c.expect("459 <nope.tld>: service unavailable", "ETRN nope.tld")
	r.mta.Wait(2, 10*time.Second)
	r.waitEmpty()
	r.check()
}

// A client outside mynetworks is refused by permit_mynetworks, reject.
func TestETRNClientOutsideMynetworks(t *testing.T) {
	r := newRelay(t, "mynetworks = 192.0.2.0/24")
	r.send("a@sender.test", "u@customer.tld") // relaying to a relay domain is allowed
	r.waitDeferred(1)
	c := r.dial()
	c.cmd("EHLO client.test")
	c.expect("554 5.7.1 <customer.tld>: Etrn command rejected: Access denied", "ETRN customer.tld")
	r.quiet(200 * time.Millisecond)
	if s := r.stats(); s.Deferred != 1 {
		t.Fatalf("refused ETRN changed the queue: %+v", s)
	}
	r.check()
}

// Many sessions sending ETRN for the same domain at once, while its mail
// is being delivered, deliver every message exactly once.
func TestETRNStormDeliversOnce(t *testing.T) {
	r := newRelay(t)
	const msgs = 20
	want := map[string]bool{}
	for i := range msgs {
		want[r.send("a@sender.test", fmt.Sprintf("u%d@customer.tld", i))] = true
	}
	r.waitDeferred(msgs)
	r.mta.Delay(20 * time.Millisecond) // keep deliveries active while ETRNs arrive

	const sessions, perSession = 20, 5
	var wg sync.WaitGroup
	errs := make(chan string, sessions*perSession)
	for range sessions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := dialSMTP(t, r.addr)
			c.conn.PrintfLine("EHLO client.test")
			c.reply()
			for range perSession {
				c.conn.PrintfLine("ETRN customer.tld")
				if got := c.reply(); got != "250 Queuing started" {
					errs <- got
				}
				time.Sleep(5 * time.Millisecond)
			}
			c.conn.PrintfLine("QUIT")
			c.reply()
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Errorf("ETRN reply %q", e)
	}
	r.mta.Wait(msgs, 15*time.Second)
	r.waitEmpty()
	r.quiet(300 * time.Millisecond)
	counts := subjects(r.mta.Messages())
	for s := range want {
		if counts[s] != 1 {
			t.Errorf("message %q delivered %d times", s, counts[s])
		}
	}
	if len(counts) != msgs {
		t.Errorf("%d distinct messages delivered, want %d", len(counts), msgs)
	}
	r.check()
}

// ETRNs for different domains at once are each answered within a few
// commits and all mail arrives.
func TestETRNConcurrentDomains(t *testing.T) {
	r := newRelay(t)
	const domains, per = 8, 5
	for d := range domains {
		for i := range per {
			r.send("a@sender.test", fmt.Sprintf("u%d@d%d.tld", i, d))
		}
	}
	r.waitDeferred(domains * per)
	var wg sync.WaitGroup
	lat := make(chan time.Duration, domains)
	for d := range domains {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := dialSMTP(t, r.addr)
			c.conn.PrintfLine("EHLO client.test")
			c.reply()
			start := time.Now()
			c.conn.PrintfLine("ETRN d%d.tld", d)
			if got := c.reply(); got != "250 Queuing started" {
				t.Errorf("ETRN d%d.tld: %q", d, got)
			}
			lat <- time.Since(start)
		}()
	}
	wg.Wait()
	close(lat)
	var worst time.Duration
	for l := range lat {
		worst = max(worst, l)
	}
	t.Logf("slowest of %d concurrent ETRN replies: %v", domains, worst)
	if worst > 2*time.Second {
		t.Errorf("concurrent ETRN took %v", worst)
	}
	if got := r.mta.Wait(domains*per, 15*time.Second); len(got) != domains*per {
		t.Fatalf("%d of %d delivered", len(got), domains*per)
	}
	r.waitEmpty()
	r.check()
}

// The flush service used by `holdfast flush DOMAIN` / `--all` (the control
// socket's library call) expedites as ETRN does.
func TestOperatorFlush(t *testing.T) {
	r := newRelay(t)
	r.send("a@sender.test", "u@customer.tld")
	r.send("a@sender.test", "u@other.tld")
	r.waitDeferred(2)
	res, err := r.d.flush.Flush("customer.tld", false)
	if err != nil || res.Messages != 1 {
		t.Fatalf("Flush = %+v, %v", res, err)
	}
	r.mta.Wait(1, 10*time.Second)
	r.waitDeferred(1)
	res, err = r.d.flush.FlushAll()
	if err != nil || res.Messages != 1 {
		t.Fatalf("FlushAll = %+v, %v", res, err)
	}
	r.mta.Wait(2, 10*time.Second)
	r.waitEmpty()
	r.check()
}

// When fast_flush_domains changes between runs the index is rebuilt at
// start-up: mail deferred while its domain was not eligible can be flushed
// at once after the restart (Postfix needs a sendmail -q first, §2.9).
func TestFlushDomainsChangeRebuildsIndex(t *testing.T) {
	dir := t.TempDir()
	mta := testutil.NewMTA(t, testutil.MTAOptions{})
	r := startRelay(t, dir, mta, "fast_flush_domains = customer.tld")
	subj := r.send("a@sender.test", "u@other.tld")
	r.waitDeferred(1)
	if got := r.etrn("other.tld"); got != "459 <other.tld>: service unavailable" {
		t.Fatalf("ETRN before: %q", got)
	}
	r.check()
	r.stop()

	r = startRelay(t, dir, mta, "fast_flush_domains = customer.tld, other.tld")
	if !r.d.store.Report().Rebuilt {
		t.Fatal("index not rebuilt after fast_flush_domains changed")
	}
	r.check()
	if got := r.etrn("other.tld"); got != "250 Queuing started" {
		t.Fatalf("ETRN after: %q", got)
	}
	if got := subjects(mta.Wait(1, 10*time.Second)); got[subj] != 1 {
		t.Fatalf("delivered %v", got)
	}
	r.waitEmpty()
	r.check()
	r.stop()

	// Same policy again: no rebuild.
	r = startRelay(t, dir, mta, "fast_flush_domains = customer.tld, other.tld")
	if r.d.store.Report().Rebuilt {
		t.Error("index rebuilt although the policy did not change")
	}
}

// `holdfast flush DOMAIN --wait` through the control socket, and the
// Prometheus counters of ETRN and deliveries on metrics_listen.
func TestControlFlushAndMetrics(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "c.sock")
	r := newRelay(t, "control_socket = "+sock, "metrics_listen = 127.0.0.1:0")
	r.send("a@sender.test", "u1@customer.tld")
	r.send("a@sender.test", "u2@customer.tld")
	r.send("a@sender.test", "u@other.tld")
	r.waitDeferred(3)

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	st, err := control.NewClient(sock).Flush(ctx, control.FlushRequest{Site: "customer.tld", Wait: true, WaitFor: 15 * time.Second}, nil)
	if err != nil {
		t.Fatalf("flush: %v", err)
	}
	if st.Messages != 2 || st.Delivered != 2 || st.TimedOut {
		t.Fatalf("flush status %+v", st)
	}
	if got := r.etrn("other.tld"); got != "250 Queuing started" {
		t.Fatalf("ETRN: %q", got)
	}
	r.mta.Wait(3, 10*time.Second)
	r.waitEmpty()
	r.check()

	resp, err := http.Get("http://" + r.d.metricsLn.Addr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`holdfast_flush_requests_total{result="ok",source="etrn"} 1`,
		`holdfast_flush_requests_total{result="ok",source="cli"} 1`,
		`holdfast_messages_total{status="accepted"} 3`,
		`holdfast_messages_total{status="sent"} 3`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	if t.Failed() {
		t.Logf("metrics:\n%s", body)
	}
}

// A second serve on the same queue fails with the pid of the first.
func TestServeQueueInUse(t *testing.T) {
	r := newRelay(t)
	c := config.Default()
	c.Set("queue_directory", r.d.queueDir)
	c.Set("smtpd_listen", "127.0.0.1:0")
	c.Set("control_socket", "")
	_, err := startDaemon(c, zerolog.Nop())
	if err == nil {
		t.Fatal("second daemon started on the same queue")
	}
	msg, code := startError(err, "x.cf")
	if code != exTempFail || !strings.Contains(msg, fmt.Sprintf("in use by pid %d", os.Getpid())) {
		t.Fatalf("got %q, %d", msg, code)
	}
}
