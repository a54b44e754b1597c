package main

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/holdfast-mta/holdfast/config"
	"github.com/holdfast-mta/holdfast/internal/testutil"
	"github.com/holdfast-mta/holdfast/store"
)

// reloadRelay is a daemon started from a configuration file, with its
// reloader on SIGHUP as serve wires it.
type reloadRelay struct {
	*relay
	path string
	rl   *reloader
	log  *testutil.SyncBuffer
	text string // the configuration file's text as started
}

// startReloadRelay writes the seed configuration (plus extra) to a file
// and starts the daemon from it; SIGHUP reloads it until the test ends.
func startReloadRelay(t *testing.T, extra ...string) *reloadRelay {
	t.Helper()
	dir := t.TempDir()
	mta := testutil.NewMTA(t, testutil.MTAOptions{})
	next := fmt.Sprintf("etrn-only:[%s]:%d", mta.Host, mta.Port)
	tpath := filepath.Join(dir, "transport")
	tbl := ""
	for _, d := range []string{"customer.tld", "other.tld", "new.tld"} {
		tbl += d + " " + next + "\n"
	}
	if err := os.WriteFile(tpath, []byte(tbl), 0o600); err != nil {
		t.Fatal(err)
	}
	text := fmt.Sprintf(seedConfig, filepath.Join(dir, "queue"), tpath) + strings.Join(extra, "\n") + "\n"
	path := filepath.Join(dir, "holdfast.cf")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	logs := &testutil.SyncBuffer{}
	log := zerolog.New(io.MultiWriter(zerolog.NewTestWriter(t), logs)).Level(zerolog.InfoLevel)
	d, err := startDaemon(c, log)
	if err != nil {
		t.Fatalf("startDaemon: %v", err)
	}
	r := &relay{t: t, d: d, mta: mta, addr: d.smtpAddrs()[0]}
	rl := &reloader{d: d, path: path, cur: c}
	d.reloader.Store(rl)
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	stop := make(chan struct{})
	watched := make(chan struct{})
	go func() { rl.watchHUP(hup, stop); close(watched) }()
	t.Cleanup(func() {
		signal.Stop(hup)
		close(stop)
		<-watched
		r.stop()
	})
	return &reloadRelay{relay: r, path: path, rl: rl, log: logs, text: text}
}

// rewrite replaces the configuration file with the started text plus
// lines (later lines win).
func (r *reloadRelay) rewrite(lines ...string) {
	r.t.Helper()
	if err := os.WriteFile(r.path, []byte(r.text+strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		r.t.Fatal(err)
	}
}

// hup sends SIGHUP to the process (serve's reload signal).
func hup(t *testing.T) {
	t.Helper()
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
}

// waitLog waits until the log contains s.
func (r *reloadRelay) waitLog(s string) {
	r.t.Helper()
	testutil.Eventually(r.t, 20*time.Second, "log line "+s, func() bool { return strings.Contains(r.log.String(), s) })
}

// rcpt opens a session from 127.0.0.1 and returns RCPT TO's reply.
func (r *reloadRelay) rcpt(to string) string {
	r.t.Helper()
	c := r.dial()
	c.cmd("EHLO client.test")
	c.cmd("MAIL FROM:<a@origin.test>")
	got := c.cmd("RCPT TO:<%s>", to)
	c.cmd("QUIT")
	return got
}

// SIGHUP while 10 sessions are sending and ETRN flushes run: no session
// is dropped, no message is lost or delivered twice, and the new
// configuration is in force afterwards (a newly added relay domain is
// accepted). Then a broken configuration is refused, logged, and the one
// in force stays.
func TestReloadUnderLoad(t *testing.T) {
	// 127.0.0.1 is outside mynetworks: relay_domains decides.
	r := startReloadRelay(t, "mynetworks = 127.0.0.2/32", "smtpd_etrn_restrictions =", "smtpd_client_etrn_rate_limit = 0", "smtpd_client_connection_rate_limit = 0")
	if got := r.rcpt("u@new.tld"); got != "454 4.7.1 <u@new.tld>: Relay access denied" {
		t.Fatalf("before the reload: %q", got)
	}

	const sessions, perSession = 10, 6
	var wg sync.WaitGroup
	var mu sync.Mutex
	var sent []string
	midway := make(chan struct{}, sessions)
	resume := make(chan struct{})
	errs := make(chan error, sessions+1)
	for i := range sessions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := r.dial()
			c.cmd("EHLO client.test")
			for j := range perSession {
				if j == perSession/2 {
					midway <- struct{}{}
					<-resume // the reload happens here, mid-session
				}
				to := []string{"customer.tld", "other.tld"}[j%2]
				subject := fmt.Sprintf("s%d-m%d", i, j)
				for _, step := range []struct{ cmd, want string }{
					{"MAIL FROM:<a@origin.test>", "250 2.1.0 Ok"},
					{"RCPT TO:<u" + fmt.Sprint(i) + "@" + to + ">", "250 2.1.5 Ok"},
					{"DATA", "354 End data with <CR><LF>.<CR><LF>"},
				} {
					if got := c.cmd("%s", step.cmd); got != step.want {
						errs <- fmt.Errorf("session %d message %d: %s: %q", i, j, step.cmd, got)
						return
					}
				}
				if got := c.cmd("Subject: %s\r\n\r\nhello\r\n.", subject); !strings.HasPrefix(got, "250 2.0.0 Ok: queued as ") {
					errs <- fmt.Errorf("session %d message %d: end of data: %q", i, j, got)
					return
				}
				mu.Lock()
				sent = append(sent, subject)
				mu.Unlock()
			}
			if got := c.cmd("QUIT"); got != "221 2.0.0 Bye" {
				errs <- fmt.Errorf("session %d: QUIT: %q", i, got)
			}
		}()
	}
	// ETRN flushes all along.
	etrnStop := make(chan struct{})
	etrnDone := make(chan int)
	go func() {
		n := 0
		defer func() { etrnDone <- n }()
		for {
			select {
			case <-etrnStop:
				return
			default:
			}
			if got := r.etrn([]string{"customer.tld", "other.tld"}[n%2]); !strings.HasPrefix(got, "250 ") {
				errs <- fmt.Errorf("ETRN: %q", got)
				return
			}
			n++
		}
	}()
	for range sessions {
		select {
		case <-midway:
		case <-time.After(60 * time.Second):
			t.Fatal("sessions did not reach the middle of their run")
		}
	}
	r.rewrite("relay_domains = customer.tld, other.tld, new.tld")
	hup(t)
	r.waitLog(`"trigger":"SIGHUP"`)
	close(resume)
	wg.Wait()
	close(etrnStop)
	flushes := <-etrnDone
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		t.FailNow()
	}
	if !strings.Contains(r.log.String(), "configuration reloaded") {
		t.Fatalf("no reload logged:\n%s", r.log.String())
	}
	if got := r.rcpt("u@new.tld"); got != "250 2.1.5 Ok" {
		t.Fatalf("new relay domain after the reload: %q", got)
	}

	// Every acknowledged message is delivered exactly once.
	for _, d := range []string{"customer.tld", "other.tld"} {
		r.etrn(d)
	}
	r.waitFor("an empty queue", 30*time.Second, func(s store.Stats) bool {
		if s.Deferred > 0 && s.Active == 0 && s.Incoming == 0 {
			r.etrn("customer.tld")
			r.etrn("other.tld")
		}
		return s.Incoming+s.Active+s.Deferred+s.Hold == 0
	})
	got := subjects(r.mta.Messages())
	if len(sent) != sessions*perSession {
		t.Fatalf("%d messages acknowledged, want %d", len(sent), sessions*perSession)
	}
	for _, s := range sent {
		if got[s] != 1 {
			t.Errorf("%s delivered %d times", s, got[s])
		}
	}
	if len(got) != len(sent) {
		t.Errorf("%d distinct messages delivered, %d sent", len(got), len(sent))
	}
	t.Logf("%d sessions x %d messages, %d ETRN flushes during the run, all delivered once", sessions, perSession, flushes)

	// A broken configuration: refused, logged, the old one stays.
	r.rewrite("relay_domains = customer.tld", "smtpd_recipient_restrictions = reject_everything_unknown")
	before := r.rl.count.Load()
	hup(t)
	r.waitLog("configuration not reloaded; the previous one stays in force")
	if !strings.Contains(r.log.String(), "reject_everything_unknown") {
		t.Errorf("the refusal does not name the error:\n%s", r.log.String())
	}
	if n := r.rl.count.Load(); n != before {
		t.Fatalf("a broken configuration was counted as reloaded")
	}
	if got := r.rcpt("u@new.tld"); got != "250 2.1.5 Ok" {
		t.Fatalf("after a refused reload: %q (the previous configuration should stay)", got)
	}
}

// serve on SIGHUP: RELOADING=1 (with MONOTONIC_USEC) then READY=1; a
// storm of 100 SIGHUPs in a second is coalesced (far fewer reloads, never
// a crash); holdfast reload's exit codes: 0 reloaded, 78 refused (the
// daemon's error printed), 69 no daemon.
func TestServeReload(t *testing.T) {
	path, _ := writeConfig(t)
	sock := filepath.Join(t.TempDir(), "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	t.Setenv("NOTIFY_SOCKET", sock)
	var out testutil.SyncBuffer
	done := make(chan int, 1)
	go func() { done <- runServe([]string{"-c", path}, &out, &out) }()
	expectNotify(t, conn, "READY=1", &out)

	hup(t)
	expectReloading(t, conn, &out)
	expectNotify(t, conn, "READY=1", &out)

	// holdfast reload: 0.
	var stdout, stderr testutil.SyncBuffer
	if code := runReload([]string{"-c", path}, &stdout, &stderr); code != 0 || !strings.Contains(stdout.String(), "configuration reloaded") {
		t.Fatalf("reload: exit %d, %s %s", code, stdout.String(), stderr.String())
	}
	expectReloading(t, conn, &out)
	expectNotify(t, conn, "READY=1", &out)

	// A configuration the daemon refuses: 78 and its error.
	text, _ := os.ReadFile(path)
	if err := os.WriteFile(path, append(append([]byte{}, text...), "smtpd_relay_restrictions = permit_everything_please\nsmtpd_listen = 127.0.0.1:1\n"...), 0o600); err != nil {
		t.Fatal(err)
	}
	stdout, stderr = testutil.SyncBuffer{}, testutil.SyncBuffer{}
	if code := runReload([]string{"-c", path}, &stdout, &stderr); code != exConfig || !strings.Contains(stderr.String(), "permit_everything_please") {
		t.Fatalf("broken configuration: exit %d, stdout %q stderr %q", code, stdout.String(), stderr.String())
	}
	expectReloading(t, conn, &out)
	expectNotify(t, conn, "READY=1", &out)
	// A restart-only change is named.
	if err := os.WriteFile(path, append(append([]byte{}, text...), "smtpd_listen = 127.0.0.1:1\n"...), 0o600); err != nil {
		t.Fatal(err)
	}
	stdout, stderr = testutil.SyncBuffer{}, testutil.SyncBuffer{}
	if code := runReload([]string{"-c", path}, &stdout, &stderr); code != 0 || !strings.Contains(stdout.String(), "take effect after a restart: smtpd_listen") {
		t.Fatalf("restart-only change: exit %d, %s %s", code, stdout.String(), stderr.String())
	}
	expectReloading(t, conn, &out)
	expectNotify(t, conn, "READY=1", &out)
	if err := os.WriteFile(path, text, 0o600); err != nil {
		t.Fatal(err)
	}

	// The storm.
	before := strings.Count(out.String(), "configuration reloaded")
	start := time.Now()
	for range 100 {
		hup(t)
	}
	took := time.Since(start)
	// Each reload sends RELOADING=1 then READY=1; read until quiet.
	reloads := 0
	for {
		conn.SetReadDeadline(time.Now().Add(2 * time.Second))
		buf := make([]byte, 512)
		n, err := conn.Read(buf)
		if err != nil {
			break
		}
		if strings.HasPrefix(string(buf[:n]), "RELOADING=1") {
			reloads++
		}
	}
	after := strings.Count(out.String(), "configuration reloaded")
	if reloads == 0 || reloads >= 50 || after-before != reloads {
		t.Fatalf("100 SIGHUPs in %v gave %d reloads (%d logged); want a few", took, reloads, after-before)
	}
	t.Logf("100 SIGHUPs in %v: %d reloads", took, reloads)

	if err := syscall.Kill(os.Getpid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	var code int
	testutil.Eventually(t, 20*time.Second, "serve to exit", func() bool {
		select {
		case code = <-done:
			return true
		default:
			return false
		}
	})
	if code != 0 {
		t.Fatalf("exit %d: %s", code, out.String())
	}
	// No daemon: 69.
	stdout, stderr = testutil.SyncBuffer{}, testutil.SyncBuffer{}
	if code := runReload([]string{"-c", path}, &stdout, &stderr); code != exUnavailable {
		t.Fatalf("no daemon: exit %d, %s", code, stderr.String())
	}
}

// expectReloading reads RELOADING=1 with its MONOTONIC_USEC.
func expectReloading(t *testing.T, conn *net.UnixConn, out *testutil.SyncBuffer) {
	t.Helper()
	conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	buf := make([]byte, 512)
	n, err := conn.Read(buf)
	got := string(buf[:n])
	if err != nil || !strings.HasPrefix(got, "RELOADING=1\nMONOTONIC_USEC=") {
		t.Fatalf("notify: %q, %v; want RELOADING=1; log:\n%s", got, err, out.String())
	}
}

// A reload takes new TLS certificate files for the sessions after it; a
// certificate that does not load is refused and the one in force stays.
func TestReloadTLSCertificate(t *testing.T) {
	ca, err := testutil.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	files := func(name string) (string, string) {
		c, err := ca.Issue(time.Now().Add(24*time.Hour), name)
		if err != nil {
			t.Fatal(err)
		}
		cf, kf, err := testutil.PEMFiles(t.TempDir(), c)
		if err != nil {
			t.Fatal(err)
		}
		return cf, kf
	}
	ca1, ka1 := files("one.relay.test")
	r := startReloadRelay(t, "smtpd_tls_cert_file = "+ca1, "smtpd_tls_key_file = "+ka1)
	if got := r.serverCert(); got != "one.relay.test" {
		t.Fatalf("certificate at start: %q", got)
	}
	c2, k2 := files("two.relay.test")
	r.rewrite("smtpd_tls_cert_file = "+c2, "smtpd_tls_key_file = "+k2)
	res, err := r.rl.reload("test")
	if err != nil {
		t.Fatal(err)
	}
	if got := r.serverCert(); got != "two.relay.test" {
		t.Fatalf("certificate after the reload: %q (%+v)", got, res)
	}
	bad := filepath.Join(t.TempDir(), "half.pem")
	os.WriteFile(bad, []byte("-----BEGIN CERTIFICATE-----\nMIIB"), 0o600)
	r.rewrite("smtpd_tls_cert_file = "+bad, "smtpd_tls_key_file = "+bad)
	if _, err := r.rl.reload("test"); err == nil || !strings.Contains(err.Error(), "smtpd_tls_cert_file") {
		t.Fatalf("a broken certificate: %v", err)
	}
	if got := r.serverCert(); got != "two.relay.test" {
		t.Fatalf("certificate after a refused reload: %q", got)
	}
}

// serverCert runs STARTTLS and returns the server certificate's name.
func (r *reloadRelay) serverCert() string {
	r.t.Helper()
	nc, err := net.DialTimeout("tcp", r.addr, 5*time.Second)
	if err != nil {
		r.t.Fatal(err)
	}
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(20 * time.Second))
	br := bufio.NewReader(nc)
	read := func() string {
		for {
			l, err := br.ReadString('\n')
			if err != nil {
				r.t.Fatalf("read: %v", err)
			}
			if len(l) < 4 || l[3] != '-' {
				return l
			}
		}
	}
	read()
	fmt.Fprintf(nc, "EHLO client.test\r\n")
	read()
	fmt.Fprintf(nc, "STARTTLS\r\n")
	if l := read(); !strings.HasPrefix(l, "220 ") {
		r.t.Fatalf("STARTTLS: %q", l)
	}
	tc := tls.Client(nc, &tls.Config{InsecureSkipVerify: true})
	if err := tc.Handshake(); err != nil {
		r.t.Fatalf("handshake: %v", err)
	}
	return tc.ConnectionState().PeerCertificates[0].Subject.CommonName
}

// A reload whose lookup table cannot be read (gone, or half written) is
// refused and the tables in force stay: mail for the customer still goes
// to its transport.
func TestReloadRefusesBadTable(t *testing.T) {
	r := startReloadRelay(t)
	dir := t.TempDir()
	half := filepath.Join(dir, "half")
	if err := os.WriteFile(half, []byte("customer.tld etrn-only:[127.0.0.1]:25\nother.tld\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, table := range []string{filepath.Join(dir, "missing"), half} {
		r.rewrite("transport_maps = texthash:" + table)
		if _, err := r.rl.reload("test"); err == nil || !strings.Contains(err.Error(), table) {
			t.Fatalf("reload with %s: %v, want it refused naming the file", table, err)
		}
	}
	subject := r.send("a@origin.test", "u@customer.tld")
	r.waitDeferred(1)
	r.etrn("customer.tld")
	r.waitEmpty()
	if got := subjects(r.mta.Messages()); got[subject] != 1 {
		t.Fatalf("delivered %v, want %q once", got, subject)
	}
}
