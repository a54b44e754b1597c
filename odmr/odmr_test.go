package odmr

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/rs/zerolog"

	"github.com/holdfast-mta/holdfast/auth"
	"github.com/holdfast-mta/holdfast/config"
	"github.com/holdfast-mta/holdfast/delivery"
	"github.com/holdfast-mta/holdfast/internal/testutil"
	"github.com/holdfast-mta/holdfast/smtpd"
	"github.com/holdfast-mta/holdfast/store"
)

// rig is a provider: a real store, a scheduler (not running: only ODMR
// delivers) and the ODMR server on loopback.
type rig struct {
	// fetchmailOpts are extra fetchmail poll options ("ssl ...").
	fetchmailOpts string
	ev            events
	// published are the domains handed to Options.Publish.
	pubMu     sync.Mutex
	published []string
	t         testing.TB
	st        *store.Store
	d         *delivery.Scheduler
	srv       *Server
	addr      string
}

func newRig(t testing.TB, run bool) *rig {
	t.Helper()
	return newRigTLS(t, run, nil)
}

// newRigTLS: with wrap, odmr_tls_wrappermode.
func newRigTLS(t testing.TB, run bool, wrap *tls.Config) *rig {
	t.Helper()
	return newRigWith(t, run, wrap, nil)
}

// deliveryOptions are the scheduler's options of the defaults table for
// relay.test, without DNS lookups, with the name, value pairs of kv.
func deliveryOptions(t testing.TB, kv ...string) delivery.Options {
	t.Helper()
	o, err := delivery.OptionsFromConfig(testutil.Config(t, append([]string{"myhostname", "relay.test", "smtp_host_lookup", "native"}, kv...)...))
	if err != nil {
		t.Fatalf("delivery.OptionsFromConfig: %v", err)
	}
	return o
}

// newRigWith: with tr, the transport map the scheduler routes by.
func newRigWith(t testing.TB, run bool, wrap *tls.Config, tr delivery.TransportTable) *rig {
	t.Helper()
	r := &rig{t: t}
	r.st = testutil.Store(t, store.Options{NoSync: true, Eligible: func(string) bool { return true }})
	log := zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.InfoLevel)
	// The customers' domains have no MX: the scheduler only defers
	// (defer_transports, as for ETRN-only customers); ODMR delivers.
	// smtp_helo_timeout of 2s: a customer server that stalls after the
	// turnaround is given up quickly.
	do := deliveryOptions(t, "defer_transports", "smtp, relay, etrn-only", "smtp_helo_timeout", "2s")
	do.Transports = tr
	d, err := delivery.New(do, r.st, log)
	if err != nil {
		t.Fatal(err)
	}
	r.d = d
	if run {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); d.Run(ctx) }()
		t.Cleanup(func() { cancel(); <-done })
	}
	pw := filepath.Join(t.TempDir(), "passwd")
	os.WriteFile(pw, []byte("alice:{PLAIN}secret\nbob:{PLAIN}bobpw\n"), 0o600)
	backend, err := auth.OpenPasswdFile(pw, "relay.test")
	if err != nil {
		t.Fatal(err)
	}
	sec, _ := auth.ParseSecurity([]string{"noanonymous"})
	o := DefaultOptions()
	o.Hostname, o.Backend, o.Security, o.TLSSecurity = "relay.test", backend, sec, sec
	o.Owners = auth.NewOwners(inlineTable(t, "inline:{ a.test=alice, b.test=alice, c.test=bob }"))
	o.Timeout, o.Batch, o.WrapperTLS, o.Events = 20*time.Second, 2, wrap, &r.ev
	o.Publish = func(d string) { r.pubMu.Lock(); r.published = append(r.published, d); r.pubMu.Unlock() }
	r.srv, err = New(o, r.st, d, log)
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r.addr = l.Addr().String()
	go r.srv.Serve(l)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		r.srv.Shutdown(ctx)
	})
	return r
}

// events counts ATRN results.
type events struct {
	mu sync.Mutex
	n  map[string]int
}

func (e *events) FlushRequest(source, result string, _ time.Duration) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.n == nil {
		e.n = map[string]int{}
	}
	e.n[source+"/"+result]++
}

func (e *events) count(k string) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.n[k]
}

func inlineTable(t testing.TB, spec string) config.Table {
	t.Helper()
	tab, err := config.OpenTable(spec)
	if err != nil {
		t.Fatal(err)
	}
	return tab
}

// queue enqueues one message from sender to rcpts through the
// scheduler's Admit, as serve does: defer_transports mail is deferred on
// arrival, never leased by the scheduler.
func (r *rig) queue(sender string, rcpts ...string) store.ID {
	r.t.Helper()
	m := &store.Message{ID: store.NewID(), Sender: sender, Arrival: time.Now(), State: store.StateIncoming}
	for _, a := range rcpts {
		m.Recipients = append(m.Recipients, store.Recipient{Addr: a})
	}
	body := []byte("Subject: for " + rcpts[0] + "\r\n\r\nhello\r\n")
	m.Size = int64(len(body))
	if err := r.d.Admit(r.st).Enqueue(m, body); err != nil {
		r.t.Fatal(err)
	}
	return m.ID
}

func (r *rig) stats() store.Stats {
	r.t.Helper()
	s, err := r.st.Stats()
	if err != nil {
		r.t.Fatal(err)
	}
	return s
}

// fetchmail runs Debian's fetchmail in ODMR mode as the customer,
// forwarding to smtphost; it returns its output.
func (r *rig) fetchmail(user, pass, domains, smtphost string) (string, error) {
	return r.fetchmailCmd(user, pass, domains, smtphost, nil)
}

// fetchmailCmd is fetchmail with started called once it runs.
func (r *rig) fetchmailCmd(user, pass, domains, smtphost string, started func(*exec.Cmd)) (string, error) {
	r.t.Helper()
	bin := testutil.Tool(r.t, "fetchmail")
	dir := r.t.TempDir()
	host, port, _ := strings.Cut(r.addr, ":")
	rc := filepath.Join(dir, "fetchmailrc")
	fmt.Fprintf(mustCreate(r.t, rc), "set no syslog\npoll %s port %s proto odmr user %q password %q fetchdomains %s smtphost %s %s\n",
		host, port, user, pass, domains, strings.Replace(smtphost, ":", "/", 1), r.fetchmailOpts)
	// Its own lock file: as root fetchmail locks /var/run/fetchmail.pid,
	// so that runs of other tests at the same time refused to start
	// ("another foreground fetchmail is running").
	cmd := exec.Command(bin, "-f", rc, "-v", "--nodetach", "--nosyslog", "--pidfile", filepath.Join(dir, "fetchmail.pid"))
	cmd.Env = append(os.Environ(), "FETCHMAILHOME="+dir, "HOME="+dir)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	done := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
			cmd.Process.Kill()
		case <-done:
		}
	}()
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		close(done)
		return "", err
	}
	if started != nil {
		started(cmd)
	}
	err := cmd.Wait()
	close(done)
	return out.String(), err
}

func mustCreate(t testing.TB, path string) *os.File {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// TestFetchmailODMR: fetchmail as the real ODMR customer; its smtphost is
// a go-smtp server standing in for the customer's MTA.
func TestFetchmailODMR(t *testing.T) {
	r := newRig(t, true)
	mta := testutil.NewMTA(t, testutil.MTAOptions{})
	for i := range 3 {
		r.queue("s@origin.test", fmt.Sprintf("u%d@a.test", i))
	}
	r.queue("s@origin.test", "v@b.test", "w@c.test") // c.test is bob's: stays
	r.queue("s@origin.test", "bad@b.test")
	mta.Rcpt("bad@b.test", &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user"})

	// Wrong password: 535, nothing sent.
	out, _ := r.fetchmail("alice", "wrong", "a.test,b.test", mta.Addr)
	if !strings.Contains(out, "535") || len(mta.Messages()) != 0 {
		t.Fatalf("wrong password: %d messages sent\n%s", len(mta.Messages()), out)
	}
	// A domain not owned: 450, nothing sent.
	out, _ = r.fetchmail("alice", "secret", "a.test,c.test", mta.Addr)
	if !strings.Contains(out, "450") || len(mta.Messages()) != 0 {
		t.Fatalf("not owned: %d messages sent\n%s", len(mta.Messages()), out)
	}
	out, err := r.fetchmail("alice", "secret", "a.test,b.test", mta.Addr)
	if err != nil {
		t.Fatalf("fetchmail: %v\n%s", err, out)
	}
	got := mta.Messages()
	if len(got) != 4 {
		t.Fatalf("customer MTA got %d messages, want 4\n%s", len(got), out)
	}
	for _, m := range got {
		for _, to := range m.To {
			if !strings.HasSuffix(to, "@a.test") && !strings.HasSuffix(to, "@b.test") {
				t.Errorf("delivered to %s", to)
			}
		}
	}
	// Left: w@c.test's message, and the bounce for bad@b.test.
	st := r.stats()
	if total := st.Incoming + st.Active + st.Deferred + st.Hold; total != 2 {
		t.Errorf("queue holds %d messages, want 2 (c.test's, the DSN): %+v", total, st)
	}
	msgs, _, err := r.st.List(store.Filter{}, "", 10)
	if err != nil {
		t.Fatal(err)
	}
	sawDSN := false
	for _, m := range msgs {
		if m.Sender == "" && len(m.Recipients) == 1 && m.Recipients[0].Addr == "s@origin.test" {
			sawDSN = true
		}
	}
	if !sawDSN {
		t.Errorf("no bounce DSN to the sender: %+v", msgs)
	}
	// Nothing more for alice.
	out, _ = r.fetchmail("alice", "secret", "a.test,b.test", mta.Addr)
	if !strings.Contains(out, "453") {
		t.Errorf("second ATRN: want 453 You have no mail\n%s", out)
	}
}

// dialog is a raw client on the ODMR port.
type dialog struct {
	t testing.TB
	c net.Conn
	r *bufio.Reader
}

func (r *rig) dial() *dialog {
	r.t.Helper()
	c, err := net.DialTimeout("tcp", r.addr, 5*time.Second)
	if err != nil {
		r.t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(20 * time.Second))
	r.t.Cleanup(func() { c.Close() })
	d := &dialog{t: r.t, c: c, r: bufio.NewReader(c)}
	d.expect("220 relay.test ESMTP holdfast ODMR")
	return d
}

func (d *dialog) send(s string) {
	d.t.Helper()
	if _, err := d.c.Write([]byte(s + "\r\n")); err != nil {
		d.t.Fatal(err)
	}
}

func (d *dialog) expect(want string) string {
	d.t.Helper()
	l, err := d.r.ReadString('\n')
	if err != nil {
		d.t.Fatalf("want %q: %v", want, err)
	}
	l = strings.TrimRight(l, "\r\n")
	if p, ok := strings.CutSuffix(want, "*"); ok && strings.HasPrefix(l, p) || l == want {
		return l
	}
	d.t.Fatalf("want %q, got %q", want, l)
	return ""
}

func (d *dialog) ehlo() {
	d.t.Helper()
	d.send("EHLO customer.test")
	for !strings.HasPrefix(d.expect("250*"), "250 ") {
	}
}

func TestODMRBadInput(t *testing.T) {
	r := newRig(t, false)
	r.queue("s@origin.test", "u@a.test")
	d := r.dial()
	d.send("ATRN a.test")
	d.expect("530 5.7.0 Authentication required")
	d.send("MAIL FROM:<x@y>")
	d.expect("530 5.7.0 Authentication required")
	d.ehlo()
	d.send("AUTH PLAIN " + strings.Repeat("QUFB", 25000))
	d.expect("500 5.5.6 Authentication Exchange line is too long")
	d.send("AUTH PLAIN %%%%")
	d.expect("501 5.5.2 Cannot decode response")
	d.send("AUTH PLAIN " + base64.StdEncoding.EncodeToString([]byte("\x00alice\x00secret")))
	d.expect("235 2.7.0 Authentication successful")
	d.send("AUTH PLAIN " + base64.StdEncoding.EncodeToString([]byte("\x00alice\x00secret")))
	d.expect("503 5.5.1 Error: already authenticated")
	many := make([]string, 10000)
	for i := range many {
		many[i] = fmt.Sprintf("d%d.test", i)
	}
	d.send("ATRN " + strings.Join(many, ","))
	d.expect("501 5.5.4 Error: too many domains")
	d.send("ATRN a.test,b..test")
	d.expect("501 5.5.4 Syntax: ATRN [domain[,domain...]]")
	d.send("ATRN c.test")
	d.expect("450 4.7.1 <c.test>: Access denied: not owned by alice")
	d.send("ATRN b.test")
	d.expect("453 You have no mail")
	// The customer's server answers garbage after the turnaround: the
	// message goes back to the queue, never marked delivered.
	d.send("ATRN")
	d.expect("250 OK now reversing the connection")
	d.send("garbage")
	if _, err := d.r.ReadString('\n'); err == nil {
		// holdfast may send nothing, or QUIT; either way it ends.
	}
	waitQueued(t, r, 1)
	if r.ev.count("atrn/refused") != 3 || r.ev.count("atrn/no_mail") != 1 || r.ev.count("atrn/error") != 1 {
		t.Errorf("ATRN events %v", r.ev.n)
	}
	// Accepted ATRNs are published for the other hosts of a cluster, with
	// or without local mail; refused ones are not.
	r.pubMu.Lock()
	defer r.pubMu.Unlock()
	if want := []string{"b.test", "a.test", "b.test"}; !slices.Equal(r.published, want) {
		t.Errorf("published %v, want %v", r.published, want)
	}
}

// waitQueued waits until n messages are back in the queue (not active);
// n < 0: until none is active.
func waitQueued(t *testing.T, r *rig, n int64) {
	t.Helper()
	var st store.Stats
	if !testutil.WaitFor(10*time.Second, func() bool {
		st = r.stats()
		return st.Active == 0 && (n < 0 || st.Incoming+st.Deferred == n)
	}) {
		t.Fatalf("queue %+v, want %d queued and none active", st, n)
	}
}

// TestODMRCut: the customer's server goes away in the middle of the
// second message: the first is delivered, the rest stay queued, none is
// left leased.
func TestODMRCut(t *testing.T) {
	r := newRig(t, false)
	for i := range 4 {
		r.queue("s@origin.test", fmt.Sprintf("u%d@a.test", i))
	}
	d := r.dial()
	d.ehlo()
	d.send("AUTH PLAIN " + base64.StdEncoding.EncodeToString([]byte("\x00alice\x00secret")))
	d.expect("235 *")
	d.send("ATRN a.test")
	d.expect("250 OK now reversing the connection")
	// Now we are the customer's server.
	d.send("220 customer.test ESMTP")
	d.expect("EHLO relay.test")
	d.send("250 customer.test")
	for _, step := range []struct{ want, reply string }{
		{"MAIL FROM:<s@origin.test>*", "250 ok"}, {"RCPT TO:<u*", "250 ok"}, {"DATA", "354 go"},
	} {
		d.expect(step.want)
		d.send(step.reply)
	}
	for d.expect("*") != "." {
	}
	d.send("250 queued")
	d.expect("MAIL FROM:*")
	d.c.Close() // cut
	waitQueued(t, r, 3)
}

// TestPullHoldfastToHoldfast: holdfast atrn's Pull makes a second
// holdfast (its smtpd over its own store) take the provider's mail.
func TestPullHoldfastToHoldfast(t *testing.T) {
	r := newRig(t, true)
	for i := range 5 {
		r.queue("s@origin.test", fmt.Sprintf("u%d@a.test", i))
	}
	r.queue("s@origin.test", "x@b.test", "y@c.test")
	cst := testutil.Store(t, store.Options{NoSync: true})
	c := testutil.Config(t, "myhostname", "customer.test", "mynetworks", "127.0.0.0/8", "relay_domains", "a.test, b.test")
	so, err := smtpd.OptionsFromConfig(c)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := smtpd.New(so, cst, nil, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(l)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	})
	o := ClientOptions{Addr: r.addr, User: "alice", Password: "secret", Forward: l.Addr().String(), HeloName: "customer.test"}
	if err := Pull(context.Background(), o); err != nil { // every domain alice owns
		t.Fatal(err)
	}
	st, _ := cst.Stats()
	if n := st.Incoming + st.Deferred + st.Active; n != 6 {
		t.Errorf("customer queued %d messages, want 6", n)
	}
	waitQueued(t, r, 1) // y@c.test (bob's) stays
	if err := Pull(context.Background(), o); !errors.Is(err, ErrNoMail) {
		t.Errorf("second pull: %v, want ErrNoMail", err)
	}
	o.Password = "wrong"
	if err := Pull(context.Background(), o); err == nil || !strings.Contains(err.Error(), "535") {
		t.Errorf("wrong password: %v", err)
	}
}

// TestFetchmailCut: fetchmail dies in the middle of the transfer (the
// customer's server receiving the second message): nothing is lost, none
// is left leased, and at most the one in flight is delivered again.
func TestFetchmailCut(t *testing.T) {
	r := newRig(t, true)
	mta := testutil.NewMTA(t, testutil.MTAOptions{})
	const n = 5
	for i := range n {
		r.queue("s@origin.test", fmt.Sprintf("u%d@a.test", i))
	}
	var proc atomic.Pointer[os.Process]
	var seen atomic.Int32
	mta.OnData(func(testutil.Received) {
		if seen.Add(1) == 2 {
			if p := proc.Load(); p != nil {
				p.Kill()
			}
		}
	})
	r.fetchmailCmd("alice", "secret", "a.test", mta.Addr, func(c *exec.Cmd) { proc.Store(c.Process) })
	waitQueued(t, r, -1)
	st := r.stats()
	got := map[string]bool{}
	for _, m := range mta.Messages() {
		got[m.To[0]] = true
	}
	queued := int(st.Incoming + st.Deferred)
	t.Logf("received %d, queued %d of %d", len(got), queued, n)
	if len(got)+queued < n {
		t.Errorf("lost mail: %d received, %d queued, of %d", len(got), queued, n)
	}
	if len(got)+queued > n+1 {
		t.Errorf("more than the one in flight would be repeated: %d received, %d queued", len(got), queued)
	}
	if len(got) == n {
		t.Errorf("the cut did not happen: all %d delivered", n)
	}
}

// TestODMRStall: the customer's server says nothing after the
// turnaround: at smtp_helo_timeout the session ends and the mail is back
// in the queue, unattempted.
func TestODMRStall(t *testing.T) {
	r := newRig(t, false)
	id := r.queue("s@origin.test", "u@a.test")
	d := r.dial()
	d.ehlo()
	d.send("AUTH PLAIN " + base64.StdEncoding.EncodeToString([]byte("\x00alice\x00secret")))
	d.expect("235 *")
	d.send("ATRN a.test")
	d.expect("250 OK now reversing the connection")
	start := time.Now()
	if l, err := d.r.ReadString('\n'); err == nil {
		t.Fatalf("holdfast sent %q to a silent server", l)
	}
	if time.Since(start) > 15*time.Second {
		t.Errorf("session ended after %v", time.Since(start))
	}
	waitQueued(t, r, 1)
	m, err := r.st.Get(id)
	// As Admit left it: one deferral, "deferred transport".
	if err != nil || m.Recipients[0].Attempts != 1 || m.Recipients[0].Reply != "deferred transport" {
		t.Errorf("message after the stall: %+v, %v", m, err)
	}
}

// TestPullWrapperTLS: odmr_tls_wrappermode: TLS from the first byte,
// the whole ODMR session and the turnaround inside it; a plaintext
// client gets no greeting.
func TestPullWrapperTLS(t *testing.T) {
	cert, err := testutil.SelfSignedTLS("relay.test", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	r := newRigTLS(t, false, cert)
	r.queue("s@origin.test", "u@a.test")
	mta := testutil.NewMTA(t, testutil.MTAOptions{Domain: "customer.test"})
	o := ClientOptions{Addr: r.addr, User: "alice", Password: "secret", Forward: mta.Addr, HeloName: "customer.test",
		TLS: &tls.Config{InsecureSkipVerify: true}}
	if err := Pull(context.Background(), o); err != nil {
		t.Fatal(err)
	}
	if got := mta.Wait(1, 10*time.Second); len(got) != 1 {
		t.Fatalf("customer got %d messages", len(got))
	}
	waitQueued(t, r, 0)
	// Plain TCP to the TLS port: no greeting, a clean end.
	c, err := net.Dial("tcp", r.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(25 * time.Second))
	c.Write([]byte("EHLO x\r\n"))
	if b, _ := io.ReadAll(c); strings.Contains(string(b), "220 ") {
		t.Errorf("plaintext got %q", b)
	}
}

func TestODMRAuthRate(t *testing.T) {
	r := newRig(t, false)
	o := *r.srv.cur.Load()
	o.AuthRateLimit = 2
	if err := r.srv.Reload(o); err != nil { // new sessions take it
		t.Fatal(err)
	}
	for i := range 2 {
		d := r.dial()
		d.ehlo()
		d.send("AUTH PLAIN " + base64.StdEncoding.EncodeToString([]byte("\x00alice\x00wrong")))
		d.expect("535 5.7.8 *")
		if i == 1 {
			d.send("AUTH PLAIN " + base64.StdEncoding.EncodeToString([]byte("\x00alice\x00secret")))
			d.expect("450 4.7.1 Error: too many AUTH commands from 127.0.0.1")
		}
	}
}

// TestODMRAndETRNAtOnce: while ETRN makes the scheduler deliver a
// domain's mail to its registered server, the customer pulls the same
// domain over ODMR: every message arrives exactly once, at one of the
// two.
func TestODMRAndETRNAtOnce(t *testing.T) {
	viaETRN := testutil.NewMTA(t, testutil.MTAOptions{Domain: "gw.customer.test"})
	viaODMR := testutil.NewMTA(t, testutil.MTAOptions{Domain: "customer.test"})
	hop := fmt.Sprintf("etrn-only:[127.0.0.1]:%d", viaETRN.Port)
	r := newRigWith(t, true, nil, tableFunc(func(rcpt string) (string, bool, error) {
		return hop, strings.HasSuffix(rcpt, "@a.test"), nil
	}))
	const n = 40
	for i := range n {
		r.queue("s@origin.test", fmt.Sprintf("u%d@a.test", i))
	}
	waitQueued(t, r, n)
	done := make(chan error, 1)
	go func() {
		done <- Pull(context.Background(), ClientOptions{Addr: r.addr, User: "alice", Password: "secret",
			Domains: []string{"a.test"}, Forward: viaODMR.Addr, HeloName: "customer.test"})
	}()
	if _, err := r.st.Flush("a.test", false); err != nil {
		t.Fatal(err)
	}
	r.d.Wake()
	if err := <-done; err != nil && !errors.Is(err, ErrNoMail) {
		t.Fatal(err)
	}
	waitQueued(t, r, 0)
	seen := map[string]int{}
	for _, m := range append(viaETRN.Messages(), viaODMR.Messages()...) {
		seen[m.To[0]]++
	}
	for a, k := range seen {
		if k != 1 {
			t.Errorf("%s delivered %d times", a, k)
		}
	}
	if len(seen) != n {
		t.Errorf("%d of %d delivered", len(seen), n)
	}
	t.Logf("ETRN delivered %d, ODMR %d", len(viaETRN.Messages()), len(viaODMR.Messages()))
}

// TestFetchmailODMRTLS: fetchmail's ODMR mode cannot STARTTLS; with
// odmr_tls_wrappermode it talks TLS from the first byte ("ssl").
func TestFetchmailODMRTLS(t *testing.T) {
	cert, err := testutil.SelfSignedTLS("relay.test", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	r := newRigTLS(t, false, cert)
	r.fetchmailOpts = "ssl no sslcertck"
	mta := testutil.NewMTA(t, testutil.MTAOptions{})
	r.queue("s@origin.test", "u@a.test")
	out, err := r.fetchmail("alice", "secret", "a.test", mta.Addr)
	if err != nil || len(mta.Messages()) != 1 {
		t.Fatalf("fetchmail over TLS: %v, %d messages\n%s", err, len(mta.Messages()), out)
	}
	waitQueued(t, r, 0)
}
