package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/holdfast-mta/holdfast/config"
	"github.com/holdfast-mta/holdfast/control"
	"github.com/holdfast-mta/holdfast/internal/testutil"
	"github.com/holdfast-mta/holdfast/store"
)

// TestBackupWhileSending takes `holdfast db backup` while 20 clients
// submit mail through the control socket: the snapshot opens, passes
// `holdfast db check`, and holds every message committed before the
// backup started.
func TestBackupWhileSending(t *testing.T) {
	e := newOpEnv(t, "")
	cl := control.NewClient(e.sock)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var mu sync.Mutex
	var committed []string
	var wg sync.WaitGroup
	for w := 0; w < 20; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 500 && ctx.Err() == nil; i++ {
				id, err := cl.Submit(ctx, fmt.Sprintf("c%d@sender.test", w), true, []string{"x@customer.test"},
					strings.NewReader(fmt.Sprintf("Subject: %d/%d\r\n\r\nbody\r\n", w, i)))
				if err != nil {
					if ctx.Err() == nil {
						t.Error(err)
					}
					return
				}
				mu.Lock()
				committed = append(committed, id)
				mu.Unlock()
			}
		}()
	}
	// Let the senders get going, then note what is committed.
	testutil.WaitFor(10*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(committed) >= 100
	})
	mu.Lock()
	before := append([]string(nil), committed...)
	mu.Unlock()
	bdir := filepath.Join(e.dir, "backup")
	os.MkdirAll(bdir, 0o755)
	out, errOut, code := e.run(t, nil, "", "holdfast", "db", "backup", "-c", e.cf, filepath.Join(bdir, "queue.db"))
	mu.Lock()
	during := len(committed)
	mu.Unlock()
	cancel()
	wg.Wait()
	if code != 0 || !strings.HasSuffix(out, " bytes written\n") {
		t.Fatalf("db backup = %d %q %q", code, out, errOut)
	}
	if len(before) < 100 || during <= len(before) {
		t.Logf("committed before backup %d, by its end %d", len(before), during)
	}
	// db check on the snapshot, through a configuration that points at it
	// (no daemon there: the check opens the file itself).
	cf := filepath.Join(bdir, "holdfast.cf")
	os.WriteFile(cf, []byte("queue_directory = "+bdir+"\nrelay_domains = customer.test\nfast_flush_domains = $relay_domains\n"), 0o644)
	e.expect(t, 0, filepath.Join(bdir, "queue.db")+": ok\n", "", "holdfast", "db", "check", "-c", cf)
	s, err := store.Open(filepath.Join(bdir, "queue.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, id := range before {
		if _, err := s.Get(store.ID(id)); err != nil {
			t.Errorf("backup lacks %s (committed before the backup): %v", id, err)
		}
	}
	t.Logf("backup holds the %d messages committed before it started", len(before))
}

// TestUnauthorizedUser runs the client as user nobody (uid 65534): the
// daemon reads the uid from the socket (SO_PEERCRED) and refuses.
func TestUnauthorizedUser(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root to run the client as another user; control.TestPolicy covers the policy with injected uids")
	}
	// A table, as config reads this parameter as maps (user names too are
	// Postfix syntax; the policy accepts both, see control.TestPolicy).
	e := newOpEnv(t, "authorized_flush_users = inline:{root=ok}\n")
	// The socket is mode 0660: give it nobody's group, as an operator
	// would put users in the daemon's group.
	if err := os.Chown(e.sock, 0, 65534); err != nil {
		t.Fatal(err)
	}
	m := e.queue(t, "a@sender.test", "deferred transport", "cli@customer.test")
	nobody := &syscall.Credential{Uid: 65534, Gid: 65534}
	for _, tc := range []struct {
		code   int
		stderr string
		name   string
		args   []string
	}{
		{69, "postqueue: fatal: User nobody(65534) is not allowed to flush the mail queue\n", "postqueue", []string{"-c", e.cf, "-f"}},
		{69, "postqueue: fatal: User nobody(65534) is not allowed to flush the mail queue\n", "postqueue", []string{"-c", e.cf, "-s", "customer.test"}},
		{69, "postqueue: fatal: User nobody(65534) is not allowed to flush the mail queue\n", "sendmail", []string{"-C", e.cf, "-qRcustomer.test"}},
		{exNoPerm, "holdfast: User nobody(65534) is not allowed to flush the mail queue\n", "holdfast", []string{"flush", "-c", e.cf, "customer.test"}},
		{exNoPerm, "holdfast: User nobody(65534) is not allowed to change the mail queue: root or the daemon's user only\n", "holdfast", []string{"queue", "delete", "-c", e.cf, "ALL"}},
		{exNoPerm, "holdfast: User nobody(65534) is not allowed to change the mail queue: root or the daemon's user only\n", "holdfast", []string{"queue", "show", "-c", e.cf, string(m.ID)}},
		{1, "postsuper: fatal: use of this command is reserved for the superuser\n", "postsuper", []string{"-c", e.cf, "-d", "ALL"}},
		{0, "", "mailq", []string{"-C", e.cf}},
		{0, "", "sendmail", []string{"-C", e.cf, "x@customer.test"}},
	} {
		_, errOut, code := e.run(t, nobody, "Subject: from nobody\n\nhi\n", tc.name, tc.args...)
		if code != tc.code || errOut != tc.stderr {
			t.Errorf("as nobody: %s %v = %d %q, want %d %q", tc.name, tc.args, code, errOut, tc.code, tc.stderr)
		}
	}
	st, _ := e.store.Stats()
	if st.Deferred != 1 || st.Incoming != 1 {
		t.Errorf("queue after refusals = %+v, want the deferred message and nobody's submission", st)
	}
	page, _, _ := e.store.List(store.Filter{Sender: "nobody@"}, "", 10)
	if len(page) != 1 || page[0].Sender != "nobody@relay.test" {
		t.Errorf("nobody's submission = %v", page)
	}
	// The same commands as root pass.
	e.expect(t, 0, "", "", "postqueue", "-c", e.cf, "-s", "customer.test")
}

// TestMakeInstall runs `make install` into a temporary DESTDIR and checks
// the tree: binary, compatibility links, unit, sysusers entry and config;
// a second install keeps an edited holdfast.cf.
func TestMakeInstall(t *testing.T) {
	if _, err := exec.LookPath("make"); err != nil {
		t.Skip("no make")
	}
	dest := t.TempDir()
	install := func() {
		t.Helper()
		cmd := exec.Command("make", "-s", "-C", "../..", "install", "DESTDIR="+dest, "PREFIX=/usr",
			"BIN="+filepath.Join(dest, "build", "holdfast"))
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("make install: %v\n%s", err, out)
		}
	}
	install()
	sbin := filepath.Join(dest, "usr", "sbin")
	fi, err := os.Stat(filepath.Join(sbin, "holdfast"))
	if err != nil || fi.Mode().Perm() != 0o755 {
		t.Fatalf("binary: %v %v", fi, err)
	}
	for _, n := range []string{"sendmail", "mailq", "postqueue", "postsuper"} {
		if l, err := os.Readlink(filepath.Join(sbin, n)); err != nil || l != "holdfast" {
			t.Errorf("%s -> %q, %v", n, l, err)
		}
	}
	unit, err := os.ReadFile(filepath.Join(dest, "usr", "lib", "systemd", "system", "holdfast.service"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"\nUser=holdfast\n", "\nAmbientCapabilities=CAP_NET_BIND_SERVICE\n",
		"\nExecStart=/usr/sbin/holdfast serve -c /etc/holdfast/holdfast.cf\n", "\nWantedBy=multi-user.target\n"} {
		if !strings.Contains(string(unit), want) {
			t.Errorf("unit lacks %q", want)
		}
	}
	if regexp.MustCompile(`@[A-Z]+@`).Match(unit) {
		t.Errorf("unit has unexpanded placeholders:\n%s", unit)
	}
	if _, err := os.Stat(filepath.Join(dest, "usr", "lib", "sysusers.d", "holdfast.conf")); err != nil {
		t.Error(err)
	}
	cf := filepath.Join(dest, "etc", "holdfast", "holdfast.cf")
	c, err := config.Load(cf)
	if err != nil {
		t.Fatalf("installed config: %v", err)
	}
	if w := c.Warnings(); len(w) > 0 {
		t.Errorf("installed config warnings: %v", w)
	}
	if err := c.Validate(); err != nil {
		t.Errorf("installed config: %v", err)
	}
	// The installed links dispatch on argv[0].
	cmd := exec.Command(filepath.Join(sbin, "postqueue"), "-c", cf, "-p")
	out, _ := cmd.CombinedOutput()
	if cmd.ProcessState.ExitCode() != 69 || !strings.HasPrefix(string(out), "postqueue: fatal: ") {
		t.Errorf("installed postqueue -p = %d %q", cmd.ProcessState.ExitCode(), out)
	}
	os.WriteFile(cf, []byte("myhostname = edited.example\n"), 0o644)
	install()
	if data, _ := os.ReadFile(cf); string(data) != "myhostname = edited.example\n" {
		t.Errorf("second install overwrote holdfast.cf: %q", data)
	}
	if _, err := os.Stat(cf + ".example"); err != nil {
		t.Error(err)
	}
}
