package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/holdfast-mta/holdfast/config"
	"github.com/holdfast-mta/holdfast/control"
	"github.com/holdfast-mta/holdfast/flush"
	"github.com/holdfast-mta/holdfast/follow"
	"github.com/holdfast-mta/holdfast/metrics"
	"github.com/holdfast-mta/holdfast/store"
)

// opEnv is an in-process control server on a real store in a temp dir,
// with the built binary and its compatibility links as the client.
type opEnv struct {
	dir, cf, bin string
	sock         string
	store        *store.Store
	feed         *follow.Feed // delivery outcomes for flush --wait
	stop         func()
}

// opBuild builds the binary into dir/bin with the compatibility links.
func opBuild(t *testing.T, dir string) string {
	t.Helper()
	bindir := filepath.Join(dir, "bin")
	if err := os.MkdirAll(bindir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(bindir, "holdfast")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	for _, n := range []string{"sendmail", "mailq", "postqueue", "postsuper"} {
		if err := os.Symlink("holdfast", filepath.Join(bindir, n)); err != nil {
			t.Fatal(err)
		}
	}
	return bin
}

func newOpEnv(t *testing.T, extra string) *opEnv {
	t.Helper()
	dir := t.TempDir()
	// Let other users reach the binary and the socket (unauthorized-uid test).
	os.Chmod(filepath.Dir(dir), 0o755)
	os.Chmod(dir, 0o755)
	q := filepath.Join(dir, "q")
	os.MkdirAll(q, 0o755)
	cf := filepath.Join(dir, "holdfast.cf")
	text := fmt.Sprintf(`queue_directory = %s
control_socket = $queue_directory/control.sock
myhostname = relay.test
relay_domains = customer.test
fast_flush_domains = $relay_domains
%s
`, q, extra)
	if err := os.WriteFile(cf, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := config.Load(cf)
	if err != nil {
		t.Fatal(err)
	}
	p, err := flush.New(c)
	if err != nil {
		t.Fatal(err)
	}
	s, err := store.Open(filepath.Join(q, "queue.db"), store.Options{NoSync: true, Eligible: p.Eligible, PolicyKey: p.Key()})
	if err != nil {
		t.Fatal(err)
	}
	log := zerolog.New(zerolog.NewTestWriter(t))
	m := metrics.New(s.Stats)
	svc := flush.NewService(p, s, nil, log)
	svc.SetEvents(m)
	feed := follow.NewFeed()
	srv, err := control.New(control.Options{Store: s, Flush: svc, Config: c, Log: log, Events: m, Feed: feed})
	if err != nil {
		t.Fatal(err)
	}
	sock := c.String("control_socket")
	l, err := control.Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(l) }()
	e := &opEnv{dir: dir, cf: cf, sock: sock, store: s, feed: feed}
	stopped := false
	e.stop = func() {
		if stopped {
			return
		}
		stopped = true
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
		if err := s.Check(); err != nil {
			t.Errorf("store check: %v", err)
		}
		s.Close()
	}
	t.Cleanup(e.stop)
	e.bin = opBuild(t, dir)
	return e
}

// run runs the binary under name (holdfast or a compatibility name) with
// TZ=UTC; cred, if not nil, runs it as another user.
func (e *opEnv) run(t *testing.T, cred *syscall.Credential, stdin, name string, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(filepath.Join(filepath.Dir(e.bin), name), args...)
	cmd.Env = []string{"TZ=UTC", "PATH=/usr/bin:/bin"}
	cmd.Dir = e.dir
	cmd.Stdin = strings.NewReader(stdin)
	if cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	go func() {
		<-ctx.Done()
		if cmd.Process != nil && ctx.Err() == context.DeadlineExceeded {
			cmd.Process.Kill()
		}
	}()
	err := cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return stdout.String(), stderr.String(), ee.ExitCode()
	}
	if err != nil {
		t.Fatalf("run %s %v: %v", name, args, err)
	}
	return stdout.String(), stderr.String(), 0
}

// expect runs a command and checks its exit status and, when not "*",
// its exact stdout and stderr.
func (e *opEnv) expect(t *testing.T, code int, wantOut, wantErr, name string, args ...string) string {
	t.Helper()
	out, errOut, got := e.run(t, nil, "", name, args...)
	if got != code {
		t.Errorf("%s %v: exit %d, want %d (stderr %q)", name, args, got, code, errOut)
	}
	if wantOut != "*" && out != wantOut {
		t.Errorf("%s %v: stdout\n%s\nwant\n%s", name, args, out, wantOut)
	}
	if wantErr != "*" && errOut != wantErr {
		t.Errorf("%s %v: stderr %q, want %q", name, args, errOut, wantErr)
	}
	return out
}

// queue enqueues a message; reason != "" defers every recipient with it.
func (e *opEnv) queue(t *testing.T, sender, reason string, rcpts ...string) *store.Message {
	t.Helper()
	m := &store.Message{ID: store.NewID(), Sender: sender}
	for _, r := range rcpts {
		m.Recipients = append(m.Recipients, store.Recipient{Addr: r})
	}
	if err := e.store.Enqueue(m, []byte("Subject: test\r\n\r\nbody\r\n")); err != nil {
		t.Fatal(err)
	}
	if reason != "" {
		e.finish(t, m.ID, func(r store.Recipient) (store.RcptState, string) { return store.RcptPending, reason })
	}
	got, err := e.store.Get(m.ID)
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// nextMilli returns once the clock is in a later millisecond than when
// it was called, so that the next queue ID sorts after the last one.
func nextMilli() {
	for ms := time.Now().UnixMilli(); time.Now().UnixMilli() == ms; {
		time.Sleep(100 * time.Microsecond)
	}
}

// finish leases due mail and ends the attempt of message id with the
// outcomes of fn; other leased messages are handed back.
func (e *opEnv) finish(t *testing.T, id store.ID, fn func(store.Recipient) (store.RcptState, string)) {
	t.Helper()
	leased, err := e.store.Lease(time.Now().Add(time.Hour), 1000)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range leased {
		if m.ID != id {
			if err := e.store.Unlease(m.ID); err != nil {
				t.Fatal(err)
			}
			continue
		}
		var f store.Finish
		for i, r := range m.Recipients {
			res, reply := fn(r)
			f.Outcomes = append(f.Outcomes, store.Outcome{Rcpt: i, Result: res, Reply: reply,
				DSN: "4.0.0", NextAttempt: time.Now().Add(time.Hour)})
		}
		if err := e.store.Finish(m.ID, f); err != nil {
			t.Fatal(err)
		}
	}
}

// mailqHead is the first line of a listing with holdfast's 12-character
// IDs: Postfix's long-ID layout (showq_compat.c L_HEADINGS).
const mailqHead = "----Queue ID----- --Size-- ---Arrival Time---- --Sender/Recipient------\n"

// mailqBlock is one message in the layout, built independently of the
// code under test: ID+status padded to 17, size right-aligned in 8, the
// time in 19, then the sender; each reason right-aligned to column 78;
// recipients indented 47 columns.
func mailqBlock(m *store.Message, mark string, reasons ...string) string {
	id := string(m.ID) + mark
	var b strings.Builder
	b.WriteString(id + strings.Repeat(" ", 17-len(id)) + " ")
	size := fmt.Sprint(m.Size)
	b.WriteString(strings.Repeat(" ", 8-len(size)) + size + " ")
	b.WriteString(m.Arrival.UTC().Format("Mon Jan _2 15:04:05") + " ")
	b.WriteString(showSender(m.Sender) + "\n")
	for i, r := range m.Recipients {
		if i < len(reasons) && reasons[i] != "" {
			b.WriteString(strings.Repeat(" ", 76-len(reasons[i])) + "(" + reasons[i] + ")\n")
		}
		b.WriteString(strings.Repeat(" ", 47) + r.Addr + "\n")
	}
	return b.String()
}

func TestQueueCLI(t *testing.T) {
	e := newOpEnv(t, "")
	t.Run("empty", func(t *testing.T) {
		e.expect(t, 0, "Mail queue is empty\n", "", "postqueue", "-c", e.cf, "-p")
		e.expect(t, 0, "Mail queue is empty\n", "", "mailq", "-C", e.cf)
		e.expect(t, 0, "Mail queue is empty\n", "", "holdfast", "queue", "list", "-c", e.cf)
		e.expect(t, 0, "", "", "postqueue", "-c", e.cf, "-j")
	})
	// Listings are in queue ID order: arrival order to the millisecond,
	// then the IDs' random bits. Each message gets a millisecond of its
	// own, so that a, b, c is the listing's order.
	a := e.queue(t, "a@sender.test", "deferred transport", "cli@customer.test")
	nextMilli()
	b := e.queue(t, "a@sender.test", "deferred transport", "cli@d0001.test", "x@customer.test")
	nextMilli()
	c := e.queue(t, "", "", "postmaster@customer.test")
	t.Run("stats", func(t *testing.T) {
		e.expect(t, 0, "incoming 1\nactive 0\ndeferred 2\nhold 0\ncorrupt 0\nbytes "+fmt.Sprint(a.Size+b.Size+c.Size)+"\n", "",
			"holdfast", "queue", "stats", "-c", e.cf)
		e.expect(t, 0, "*", "", "holdfast", "queue", "stats", "-c", e.cf, "--json")
	})
	t.Run("mailq layout", func(t *testing.T) { testMailqLayout(t, e, a, b, c) })
	t.Run("json", func(t *testing.T) { testPostqueueJSON(t, e, a, b, c) })
	t.Run("show", func(t *testing.T) {
		out := e.expect(t, 0, "*", "", "holdfast", "queue", "show", "-c", e.cf, string(a.ID))
		for _, want := range []string{"*** ENVELOPE RECORDS ***\n", "queue_id: " + string(a.ID) + "\n",
			"sender: a@sender.test\n", "recipient: cli@customer.test\n", "*** MESSAGE CONTENTS ***\nSubject: test\n\nbody\n",
			"cli@customer.test: pending attempts=1", "(deferred transport)\n"} {
			if !strings.Contains(out, want) {
				t.Errorf("show lacks %q:\n%s", want, out)
			}
		}
		e.expect(t, exNoInput, "", "holdfast: aaaaaaaaaaaa: no such message\n", "holdfast", "queue", "show", "-c", e.cf, "aaaaaaaaaaaa")
		e.expect(t, exUsage, "", "*", "holdfast", "queue", "show", "-c", e.cf)
	})
	t.Run("operations", func(t *testing.T) { testOperations(t, e, a, b, c) })
	t.Run("flush", func(t *testing.T) { testFlushCommands(t, e) })
	t.Run("flush wait", func(t *testing.T) { testFlushWait(t, e) })
	t.Run("sendmail", func(t *testing.T) { testSendmail(t, e) })
	t.Run("db", func(t *testing.T) { testDBRunning(t, e) })
	t.Run("progress", func(t *testing.T) { testProgress(t, e) })
	t.Run("daemon down", func(t *testing.T) { testDaemonDown(t, e) })
}

func testMailqLayout(t *testing.T, e *opEnv, a, b, c *store.Message) {
	want := mailqHead +
		mailqBlock(a, "", "deferred transport") + "\n" +
		mailqBlock(b, "", "deferred transport") + "\n" +
		mailqBlock(c, "") + "\n" +
		fmt.Sprintf("-- %d Kbytes in 3 Requests.\n", (a.Size+b.Size+c.Size)/1024)
	for _, cmd := range [][]string{{"postqueue", "-p", "-c", e.cf}, {"mailq", "-C", e.cf},
		{"sendmail", "-bp", "-C", e.cf}, {"holdfast", "queue", "list", "-c", e.cf}} {
		out := e.expect(t, 0, "*", "", cmd[0], cmd[1:]...)
		gl, wl := strings.Split(out, "\n"), strings.Split(want, "\n")
		for i := 0; i < max(len(gl), len(wl)); i++ {
			g, w := "", ""
			if i < len(gl) {
				g = gl[i]
			}
			if i < len(wl) {
				w = wl[i]
			}
			if g != w {
				t.Errorf("%v line %d:\n got %q\nwant %q", cmd, i+1, g, w)
			}
		}
	}
	// The null sender, the reason column and the recipient column.
	if !strings.Contains(want, " MAILER-DAEMON\n") || !strings.Contains(want, "\n"+strings.Repeat(" ", 58)+"(deferred transport)\n") {
		t.Errorf("layout helper is off:\n%s", want)
	}
	// Hold and active marks; one request, singular.
	e.expect(t, 0, "Placed on hold: 1 message\n", "", "holdfast", "queue", "hold", "-c", e.cf, string(c.ID))
	held, _ := e.store.Get(c.ID)
	e.expect(t, 0, mailqHead+mailqBlock(held, "!")+"\n-- 0 Kbytes in 1 Request.\n", "",
		"holdfast", "queue", "list", "-c", e.cf, "--state", "hold")
	e.expect(t, 0, "Released from hold: 1 message\n", "", "holdfast", "queue", "release", "-c", e.cf, string(c.ID))
	leased, err := e.store.Lease(time.Now(), 10)
	if err != nil || len(leased) != 1 || leased[0].ID != c.ID {
		t.Fatalf("lease = %v, %v", leased, err)
	}
	active, _ := e.store.Get(c.ID)
	e.expect(t, 0, mailqHead+mailqBlock(active, "*")+"\n-- 0 Kbytes in 1 Request.\n", "",
		"holdfast", "queue", "list", "-c", e.cf, "--state", "active")
	if err := e.store.Unlease(c.ID); err != nil {
		t.Fatal(err)
	}
	// Filters.
	for _, tc := range []struct {
		args []string
		want []*store.Message
	}{
		{[]string{"--domain", "d0001.test"}, []*store.Message{b}},
		{[]string{"--recipient", "postmaster@"}, []*store.Message{c}},
		{[]string{"--sender", "a@sender.test", "--state", "deferred"}, []*store.Message{a, b}},
		{[]string{"--state", "incoming,hold"}, []*store.Message{c}},
		{[]string{"--older-than", "1h"}, nil},
	} {
		out := e.expect(t, 0, "*", "", "holdfast", append([]string{"queue", "list", "-c", e.cf, "--json"}, tc.args...)...)
		var got []string
		for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
			var v struct {
				ID string `json:"queue_id"`
			}
			if line != "" && json.Unmarshal([]byte(line), &v) == nil {
				got = append(got, v.ID)
			}
		}
		var want []string
		for _, m := range tc.want {
			want = append(want, string(m.ID))
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("list %v = %v, want %v", tc.args, got, want)
		}
	}
	e.expect(t, exUsage, "", "holdfast: unknown queue \"bogus\" (incoming, active, deferred, hold)\n",
		"holdfast", "queue", "list", "-c", e.cf, "--state", "bogus")
}

func testPostqueueJSON(t *testing.T, e *opEnv, a, b, c *store.Message) {
	out := e.expect(t, 0, "*", "", "postqueue", "-j", "-c", e.cf)
	lines := strings.Split(out, "\n")
	if len(lines) != 4 || lines[3] != "" {
		t.Fatalf("postqueue -j: %q", out)
	}
	// Byte for byte as Postfix 3.7 prints it (anchor 14).
	want := fmt.Sprintf(`{"queue_name": "deferred", "queue_id": "%s", "arrival_time": %d, "message_size": %d, "forced_expire": false, "sender": "a@sender.test", "recipients": [{"address": "cli@customer.test", "delay_reason": "deferred transport"}]}`,
		a.ID, a.Arrival.Unix(), a.Size)
	if lines[0] != want {
		t.Errorf("line 1:\n got %s\nwant %s", lines[0], want)
	}
	for i, m := range []*store.Message{a, b, c} {
		var v struct {
			Queue      string `json:"queue_name"`
			ID         string `json:"queue_id"`
			Arrival    int64  `json:"arrival_time"`
			Size       int64  `json:"message_size"`
			Expired    *bool  `json:"forced_expire"`
			Sender     string `json:"sender"`
			Recipients []struct {
				Address string  `json:"address"`
				Reason  *string `json:"delay_reason"`
			} `json:"recipients"`
		}
		if err := json.Unmarshal([]byte(lines[i]), &v); err != nil {
			t.Fatalf("line %d: %v", i+1, err)
		}
		if v.ID != string(m.ID) || v.Queue != m.State.String() || v.Arrival != m.Arrival.Unix() ||
			v.Size != m.Size || v.Expired == nil || v.Sender != showSender(m.Sender) || len(v.Recipients) != len(m.Recipients) {
			t.Errorf("line %d = %+v, message %+v", i+1, v, m)
		}
		for j, r := range v.Recipients {
			hasReason := m.Recipients[j].Reply != ""
			if r.Address != m.Recipients[j].Addr || (r.Reason != nil) != hasReason {
				t.Errorf("line %d rcpt %d = %+v", i+1, j, r)
			}
		}
	}
	if !strings.Contains(lines[2], `"sender": "MAILER-DAEMON", "recipients": [{"address": "postmaster@customer.test"}]}`) {
		t.Errorf("null sender line: %s", lines[2])
	}
}

func testOperations(t *testing.T, e *opEnv, a, b, c *store.Message) {
	cf := e.cf
	e.expect(t, 0, "Placed on hold: 2 messages\n", "", "holdfast", "queue", "hold", "-c", cf, string(a.ID), string(b.ID))
	e.expect(t, 0, "Released from hold: 2 messages\n", "", "holdfast", "queue", "release", "ALL", "-c", cf)
	e.expect(t, 0, "Requeued: 1 message\n", "", "holdfast", "queue", "requeue", "-c", cf, "--domain", "d0001.test")
	if m, _ := e.store.Get(b.ID); m.State != store.StateIncoming {
		t.Errorf("requeued state = %v", m.State)
	}
	e.expect(t, exUsage, "", "*", "holdfast", "queue", "delete", "-c", cf)
	e.expect(t, exUsage, "", "*", "holdfast", "queue", "delete", "-c", cf, string(a.ID), "--state", "hold")
	// postsuper: messages on stderr, exit 0 for unknown and invalid ids.
	e.expect(t, 0, "", "postsuper: Placed on hold: 3 messages\n", "postsuper", "-c", cf, "-h", "ALL")
	e.expect(t, 0, "", "postsuper: Released from hold: 1 message\n", "postsuper", "-c", cf, "-H", string(a.ID))
	e.expect(t, 0, "", "postsuper: Requeued: 2 messages\n", "postsuper", "-c", cf, "-r", "ALL", "hold")
	e.expect(t, 0, "", "postsuper: warning: invalid mail queue id: bad-id\n", "postsuper", "-c", cf, "-d", "bad-id")
	e.expect(t, 0, "", "", "postsuper", "-c", cf, "-d", "aaaaaaaaaaaa")
	e.expect(t, 1, "", "postsuper: fatal: invalid directory name: bogus\n", "postsuper", "-c", cf, "-d", "ALL", "bogus")
	e.expect(t, 0, "", "", "postsuper", "-c", cf, "-d", "ALL", "hold")
	// Stdin ids and repeated options.
	out, errOut, code := e.run(t, nil, string(a.ID)+"\n", "postsuper", "-c", cf, "-h", "-", "-h", string(b.ID))
	if code != 0 || out != "" || errOut != "postsuper: Placed on hold: 2 messages\n" {
		t.Errorf("postsuper -h - -h ID = %d %q %q", code, out, errOut)
	}
	e.expect(t, 0, "", "postsuper: Deleted: 2 messages\n", "postsuper", "-c", cf, "-d", "ALL", "hold", "deferred")
	e.expect(t, 0, "Deleted: 1 message\n", "", "holdfast", "queue", "delete", "ALL", "-c", cf)
	e.expect(t, 0, "Mail queue is empty\n", "", "mailq", "-C", cf)
}

func testFlushCommands(t *testing.T, e *opEnv) {
	cf := e.cf
	m := e.queue(t, "a@sender.test", "deferred transport", "cli@customer.test")
	e.expect(t, 0, "customer.test: 1 message queued for delivery\n", "", "holdfast", "flush", "-c", cf, "customer.test")
	e.finish(t, m.ID, func(store.Recipient) (store.RcptState, string) { return store.RcptPending, "again" })
	e.expect(t, 0, "@customer.test: 1 message queued for delivery\n", "", "holdfast", "flush", "-c", cf, "@customer.test")
	e.finish(t, m.ID, func(store.Recipient) (store.RcptState, string) { return store.RcptPending, "again" })
	e.expect(t, 0, "all: 1 message queued for delivery\n", "", "holdfast", "flush", "-c", cf, "--all")
	e.expect(t, 0, string(m.ID)+": 1 message queued for delivery\n", "", "holdfast", "flush", "-c", cf, "--id", string(m.ID))
	e.expect(t, exUsage, "", "holdfast: invalid destination: \"bad..domain\"\n", "holdfast", "flush", "-c", cf, "bad..domain")
	e.expect(t, exUnavailable, "", "holdfast: Flush service is not configured for destination \"not.a.customer\"\n",
		"holdfast", "flush", "-c", cf, "not.a.customer")
	e.expect(t, exUsage, "", "*", "holdfast", "flush", "-c", cf)
	e.expect(t, exUsage, "", "*", "holdfast", "flush", "-c", cf, "--all", "customer.test")
	// postqueue and sendmail: anchor 14's messages and exit codes.
	notConf := "postqueue: fatal: Flush service is not configured for destination \"not.a.customer\"\n"
	for _, tc := range []struct {
		code   int
		stderr string
		name   string
		args   []string
	}{
		{0, "", "postqueue", []string{"-s", "customer.test"}},
		{0, "", "postqueue", []string{"-s", "sub.customer.test"}},
		{69, notConf, "postqueue", []string{"-s", "not.a.customer"}},
		{69, "postqueue: fatal: Cannot flush mail queue - invalid destination: \"bad..domain\"\n", "postqueue", []string{"-s", "bad..domain"}},
		{69, "postqueue: fatal: Cannot flush mail queue - invalid destination: \"" + strings.Repeat("a", 100) + "...\"\n", "postqueue", []string{"-s", strings.Repeat("a", 120) + "..x"}},
		{0, "", "postqueue", []string{"-f"}},
		{0, "", "postqueue", []string{"-i", "NOSUCHID"}},
		{0, "", "postqueue", []string{"-i", string(m.ID)}},
		{69, "postqueue: fatal: Cannot flush queue ID - invalid name: \"bad-id\"\n", "postqueue", []string{"-i", "bad-id"}},
		{69, "postqueue: fatal: " + postqueueUsage + "\n", "postqueue", nil},
		{69, "postqueue: fatal: " + postqueueUsage + "\n", "postqueue", []string{"-f", "-p"}},
		{0, "", "sendmail", []string{"-q"}},
		{0, "", "sendmail", []string{"-qRcustomer.test"}},
		{0, "", "sendmail", []string{"-qI" + string(m.ID)}},
		{0, "", "sendmail", []string{"-q30m"}},
		{69, notConf, "sendmail", []string{"-qRnot.a.customer"}},
		{75, "sendmail: fatal: -qS is not implemented\n", "sendmail", []string{"-qSnot.a.customer"}},
		{75, "sendmail: fatal: specify: -qRsitename\n", "sendmail", []string{"-qR"}},
		{75, "sendmail: fatal: specify: -qIqueueid\n", "sendmail", []string{"-qI"}},
		{75, "sendmail: fatal: flush site requires no recipient\n", "sendmail", []string{"-qRcustomer.test", "x@y"}},
		{75, "sendmail: fatal: display queue mode requires no recipient\n", "sendmail", []string{"-bp", "x@y"}},
		{75, "mailq: fatal: display queue mode requires no recipient\n", "mailq", []string{"x@y"}},
	} {
		cfArg := []string{"-c", cf}
		if tc.name == "sendmail" {
			cfArg = []string{"-C", cf}
		}
		e.expect(t, tc.code, "", tc.stderr, tc.name, append(cfArg, tc.args...)...)
	}
	e.store.Delete(m.ID)
}

// testFlushWait runs `holdfast flush --wait` while a stand-in for the
// delivery scheduler delivers, defers and bounces the flushed recipients
// and reports each outcome through the metrics hook.
func testFlushWait(t *testing.T, e *opEnv) {
	e.queue(t, "a@sender.test", "deferred transport", "ok@customer.test", "later@customer.test")
	e.queue(t, "a@sender.test", "deferred transport", "bad@customer.test")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			leased, err := e.store.Lease(time.Now(), 10)
			if err != nil {
				return
			}
			for _, m := range leased {
				var f store.Finish
				status := make([]string, len(m.Recipients))
				for i, r := range m.Recipients {
					o := store.Outcome{Rcpt: i, Result: store.RcptPending, Reply: "try later", NextAttempt: time.Now().Add(time.Hour)}
					status[i] = "deferred"
					switch {
					case strings.HasPrefix(r.Addr, "ok"):
						o.Result, status[i] = store.RcptDelivered, "sent"
					case strings.HasPrefix(r.Addr, "bad"):
						o.Result, status[i] = store.RcptBounced, "bounced"
					}
					f.Outcomes = append(f.Outcomes, o)
				}
				e.store.Finish(m.ID, f)
				for i, r := range m.Recipients {
					e.feed.Outcome(m.ID, r.Addr, status[i])
				}
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	out, errOut, code := e.run(t, nil, "", "holdfast", "flush", "-c", e.cf, "--wait", "--timeout", "30s", "customer.test")
	cancel()
	<-done
	want := "customer.test: 2 messages queued for delivery\ndelivered: 1, deferred again: 1, bounced: 1\n"
	if code != 0 || out != want || errOut != "" {
		t.Errorf("flush --wait = %d %q %q, want %q", code, out, errOut, want)
	}
	e.expect(t, 0, "Deleted: 1 message\n", "", "holdfast", "queue", "delete", "-c", e.cf, "ALL")
}

func testSendmail(t *testing.T, e *opEnv) {
	msg := "From nobody Tue Nov 24 22:00:00 2026\nTo: x@customer.test, \"Y\" <y@customer.test>\nCc: c@customer.test\nBcc: hidden@customer.test\nSubject: local\n\nline one\n.\nnot reached\n"
	out, errOut, code := e.run(t, nil, msg, "sendmail", "-C", e.cf, "-f", "<sender@relay.test>", "-t", "extra@customer.test")
	if code != 0 || out != "" || errOut != "" {
		t.Fatalf("sendmail -t = %d %q %q", code, out, errOut)
	}
	_, _, code = e.run(t, nil, "Subject: dots\n\n.\nafter the dot\n", "sendmail", "-C", e.cf, "-oi", "plain@customer.test")
	if code != 0 {
		t.Fatalf("sendmail -oi exit %d", code)
	}
	page, _, err := e.store.List(store.Filter{}, "", 10)
	if err != nil || len(page) != 2 {
		t.Fatalf("queued = %v, %v", page, err)
	}
	m := page[0]
	var rcpts []string
	for _, r := range m.Recipients {
		rcpts = append(rcpts, r.Addr)
	}
	if m.Sender != "sender@relay.test" || fmt.Sprint(rcpts) != "[extra@customer.test x@customer.test y@customer.test c@customer.test hidden@customer.test]" {
		t.Errorf("envelope = %s %v", m.Sender, rcpts)
	}
	body, _ := e.store.Body(m.ID)
	if !bytes.HasPrefix(body, []byte("Received: by relay.test (holdfast) with LOCAL id "+string(m.ID)+";\r\n")) ||
		bytes.Contains(body, []byte("Bcc:")) || bytes.Contains(body, []byte("From nobody")) ||
		!bytes.HasSuffix(body, []byte("Subject: local\r\n\r\nline one\r\n")) {
		t.Errorf("body:\n%q", body)
	}
	body, _ = e.store.Body(page[1].ID)
	if page[1].Sender != "root@relay.test" || !bytes.HasSuffix(body, []byte("\r\n\r\n.\r\nafter the dot\r\n")) {
		t.Errorf("-oi message: %s %q", page[1].Sender, body)
	}
	e.expect(t, 75, "", "sendmail: fatal: No recipient addresses found in message header\n", "sendmail", "-C", e.cf, "-t")
	e.expect(t, 75, "", "sendmail: fatal: -bs is not supported\n", "sendmail", "-C", e.cf, "-bs")
	e.store.Delete(page[0].ID, page[1].ID)
}

func testDBRunning(t *testing.T, e *opEnv) {
	db := filepath.Join(e.dir, "q", "queue.db")
	e.expect(t, 0, db+": ok\n", "", "holdfast", "db", "check", "-c", e.cf)
	e.expect(t, exTempFail, "", "holdfast: db compact: the daemon is running (control socket "+e.sock+"); stop it first\n",
		"holdfast", "db", "compact", "-c", e.cf)
	e.expect(t, exUsage, "", "*", "holdfast", "db", "backup", "-c", e.cf)
	e.expect(t, exUsage, "", "*", "holdfast", "db", "explode", "-c", e.cf)
}

// testDaemonDown stops the server: every command that needs it says so
// in one line; db check and compact work on the stopped queue.
func testDaemonDown(t *testing.T, e *opEnv) {
	e.queue(t, "a@sender.test", "", "x@customer.test")
	e.stop()
	down := "no control socket at " + e.sock + ": is holdfast running?"
	cf := e.cf
	for _, tc := range []struct {
		code   int
		stderr string
		name   string
		args   []string
	}{
		{exUnavailable, "holdfast: " + down, "holdfast", []string{"queue", "list", "-c", cf}},
		{exUnavailable, "holdfast: " + down, "holdfast", []string{"queue", "show", "-c", cf, "aaaaaaaaaaaa"}},
		{exUnavailable, "holdfast: " + down, "holdfast", []string{"queue", "delete", "-c", cf, "ALL"}},
		{exUnavailable, "holdfast: " + down, "holdfast", []string{"flush", "-c", cf, "customer.test"}},
		{69, "postqueue: fatal: Queue report unavailable - mail system is down", "postqueue", []string{"-c", cf, "-p"}},
		{69, "postqueue: fatal: Queue report unavailable - mail system is down", "mailq", []string{"-C", cf}},
		{69, "postqueue: fatal: Cannot flush mail queue - mail system is down", "postqueue", []string{"-c", cf, "-f"}},
		{69, "postqueue: fatal: Cannot flush mail queue - mail system is down", "sendmail", []string{"-C", cf, "-q"}},
		{69, "postqueue: fatal: Cannot flush queue ID - mail system is down", "postqueue", []string{"-c", cf, "-i", "aaaaaaaaaaaa"}},
		{1, "postsuper: fatal: " + down, "postsuper", []string{"-c", cf, "-d", "ALL"}},
		{75, "sendmail: fatal: " + down, "sendmail", []string{"-C", cf, "x@customer.test"}},
	} {
		e.expect(t, tc.code, "", tc.stderr+"\n", tc.name, tc.args...)
	}
	db := filepath.Join(e.dir, "q", "queue.db")
	e.expect(t, 0, db+": ok\n", "", "holdfast", "db", "check", "-c", cf)
	out := e.expect(t, 0, "*", "", "holdfast", "db", "compact", "-c", cf)
	if !strings.HasPrefix(out, db+": ") || !strings.HasSuffix(out, " bytes\n") {
		t.Errorf("compact: %q", out)
	}
	backup := filepath.Join(e.dir, "offline.db")
	e.expect(t, 0, "*", "", "holdfast", "db", "backup", "-c", cf, backup)
	s, err := store.Open(db, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if st, err := s.Stats(); err != nil || st.Incoming != 1 {
		t.Errorf("after compact: %+v, %v", st, err)
	}
	if err := s.Check(); err != nil {
		t.Error(err)
	}
}

// testProgress runs a bulk operation on a terminal (script(1) gives it a
// pty): a progress bar is drawn per chunk, then erased; off a terminal
// nothing but the total is printed.
func testProgress(t *testing.T, e *opEnv) {
	script, err := exec.LookPath("script")
	if err != nil {
		t.Skip("no script(1) to provide a terminal")
	}
	const n = 2500 // three chunks of the server's 1000
	if _, err := e.store.DeleteAll(store.Filter{}); err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, 10)
	for w := 0; w < 10; w++ {
		go func() {
			for i := w; i < n; i += 10 {
				m := &store.Message{Sender: "bulk@sender.test", Recipients: []store.Recipient{{Addr: fmt.Sprintf("u%d@customer.test", i)}}}
				if err := e.store.Enqueue(m, []byte("Subject: bulk\r\n\r\nx\r\n")); err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	for w := 0; w < 10; w++ {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command(script, "-qec", e.bin+" queue hold ALL -c "+e.cf, "/dev/null")
	cmd.Env = []string{"TZ=UTC", "PATH=/usr/bin:/bin", "TERM=dumb"}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("script: %v\n%q", err, out)
	}
	s := string(out)
	if !strings.Contains(s, "\rhold [########            ]  40% 1000/2500 (") ||
		!strings.Contains(s, "\rhold [################    ]  80% 2000/2500 (") ||
		!strings.Contains(s, "\r\033[KPlaced on hold: 2500 messages\r\n") {
		t.Errorf("terminal output: %q", s)
	}
	e.expect(t, 0, "Deleted: 2500 messages\n", "", "holdfast", "queue", "delete", "ALL", "--sender", "bulk@", "-c", e.cf)
}
