package testutil

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Tool finds a program the interoperability tests run as a real peer
// (dovecot, swaks, fetchmail), also in the sbin directories a non-root
// PATH lacks. Without it the test skips, saying how to install it
// (.ci/deps, which make test runs, installs the Debian packages).
func Tool(t testing.TB, name string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, d := range []string{"/usr/sbin", "/usr/local/sbin", "/sbin"} {
		p := filepath.Join(d, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode()&0o111 != 0 {
			return p
		}
	}
	t.Skipf("%s is not installed and could not be installed here (make tools / .ci/deps installs it with apt-get as root)", name)
	return ""
}

// Dovecot is a private Dovecot whose only service is authentication.
type Dovecot struct {
	// Socket is the auth-client socket (smtpd_sasl_path).
	Socket string
	// Users is the passwd-file its passdb reads.
	Users string
	dir   string
}

// StartDovecot starts Dovecot (in the foreground, as the test's child)
// with a configuration in a temporary directory: no mail protocols, a
// passwd-file passdb with users (lines "login:{SCHEME}secret"), the
// mechanisms PLAIN, LOGIN and CRAM-MD5, no failure delay. It is stopped
// when the test ends.
func StartDovecot(t testing.TB, users ...string) *Dovecot {
	t.Helper()
	bin := Tool(t, "dovecot")
	// A short directory: Unix socket paths are limited to 107 bytes.
	dir, err := os.MkdirTemp("", "hfdc")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	d := &Dovecot{Socket: filepath.Join(dir, "auth"), Users: filepath.Join(dir, "users"), dir: dir}
	if err := os.WriteFile(d.Users, []byte(strings.Join(users, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	internal := "dovecot"
	if os.Getuid() != 0 {
		internal = currentUser()
	}
	cf := filepath.Join(dir, "dovecot.conf")
	if err := os.WriteFile(cf, []byte(fmt.Sprintf(dovecotConf, dir, internal)), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-F", "-c", cf)
	out := &strings.Builder{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Skipf("cannot start dovecot: %v", err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	})
	exited := false
	up := WaitFor(20*time.Second, func() bool {
		select {
		case <-done:
			exited = true
			return true
		default:
		}
		return dovecotAnswers(d.Socket)
	})
	switch {
	case exited:
		log, _ := os.ReadFile(filepath.Join(dir, "dovecot.log"))
		t.Fatalf("dovecot exited: %s %s", out, log)
	case !up:
		t.Fatalf("dovecot does not answer on %s", d.Socket)
	}
	return d
}

// dovecotAnswers reports whether Dovecot's auth service completes the
// client handshake on socket (the socket file appears at bind(2), before
// Dovecot listens and its auth process serves).
func dovecotAnswers(socket string) bool {
	c, err := net.DialTimeout("unix", socket, time.Second)
	if err != nil {
		return false
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := fmt.Fprintf(c, "VERSION\t1\t2\nCPID\t%d\n", os.Getpid()); err != nil {
		return false
	}
	r := bufio.NewReader(io.LimitReader(c, 1<<16))
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return false
		}
		if line == "DONE\n" {
			return true
		}
	}
}

// dovecotConf is StartDovecot's configuration: %[1]s is the directory,
// %[2]s the user its internal processes run as.
const dovecotConf = `base_dir = %[1]s/run
state_dir = %[1]s/state
log_path = %[1]s/dovecot.log
protocols = none
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login cram-md5
auth_failure_delay = 0
default_internal_user = %[2]s
default_login_user = %[2]s
passdb {
  driver = passwd-file
  args = %[1]s/users
}
userdb {
  driver = static
  args = uid=%[2]s gid=%[2]s home=/nonexistent
}
service auth {
  unix_listener %[1]s/auth {
    mode = 0666
  }
}
# No auth penalty (a growing delay after failures): the tests fail on
# purpose.
service anvil {
  chroot =
  unix_listener anvil-auth-penalty {
    mode = 0
  }
}
`

func currentUser() string {
	if u := os.Getenv("USER"); u != "" {
		return u
	}
	return "nobody"
}
