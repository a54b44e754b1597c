// Package logtest checks the daemon's Postfix-format maillog with the
// tools operators run on it: Debian's pflogsumm and fail2ban-regex with
// fail2ban's postfix filter. The daemon is the built binary
// (test/crashtest's harness) and the customer's server is go-smtp
// (testutil.MTA).
package logtest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/holdfast-mta/holdfast/internal/testutil"
	"github.com/holdfast-mta/holdfast/test/crashtest"
)

func TestMain(m *testing.M) { os.Exit(crashtest.Main(m)) }

// TestPflogsummAndFail2ban runs a scripted session mix against a daemon
// with log_format = postfix and checks that pflogsumm reports exactly its
// counts and that fail2ban's postfix filter finds the relay-denied and
// authentication-failure lines.
func TestPflogsummAndFail2ban(t *testing.T) {
	for _, tool := range []string{"pflogsumm", "fail2ban-regex"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s is not installed (.ci/deps installs Debian's pflogsumm and fail2ban)", tool)
		}
	}
	mta := testutil.NewMTA(t, testutil.MTAOptions{})
	mta.Rcpt("bounce@customer.test", testutil.Reply(550, "5.1.1 no such user"))
	mta.Rcpt("later@customer.test", testutil.Reply(451, "4.3.0 try again later"))
	dir := t.TempDir()
	transport := filepath.Join(dir, "transport")
	os.WriteFile(transport, []byte(fmt.Sprintf("customer.test smtp:[127.0.0.1]:%d\n", mta.Port)), 0o600)
	passwd := filepath.Join(dir, "passwd")
	os.WriteFile(passwd, []byte("alice:{PLAIN}secret\n"), 0o600)
	maillog := filepath.Join(dir, "mail.log")
	d := crashtest.NewDaemon(t, map[string]string{
		"mynetworks":             "192.0.2.0/24", // 127.0.0.1 is a stranger
		"relay_domains":          "customer.test",
		"transport_maps":         "texthash:" + transport,
		"minimal_backoff_time":   "1h",
		"maximal_backoff_time":   "2h",
		"smtpd_error_sleep_time": "0",
		"smtpd_sasl_auth_enable": "yes",
		"smtpd_sasl_type":        "passwd-file",
		"smtpd_sasl_path":        passwd,
		"log_format":             "postfix",
		"maillog_file":           maillog,
	})
	d.Start()

	for _, to := range []string{"a@customer.test", "b@customer.test", "c@customer.test", "bounce@customer.test", "later@customer.test"} {
		send(t, d.Addr(), "s@customer.test", to)
	}
	refused(t, d.Addr(), "x@other.test")
	refused(t, d.Addr(), "y@other.test")
	authFails(t, d.Addr())
	// Three recipients delivered, the bounce's notice delivered to the
	// sender, one deferral, one bounce.
	mta.Wait(4, 20*time.Second)
	testutil.Eventually(t, 20*time.Second, "the deferral and the bounce in the maillog", func() bool {
		data, _ := os.ReadFile(maillog)
		return strings.Contains(string(data), "status=deferred") && strings.Contains(string(data), "status=bounced") &&
			strings.Count(string(data), ": removed") == 5
	})
	if err := d.Stop(); err != nil {
		t.Fatal(err)
	}
	log, _ := os.ReadFile(maillog)
	want := "NOQUEUE: reject: RCPT from localhost[127.0.0.1]: 454 4.7.1 <x@other.test>: Relay access denied; from=<s@example.org> to=<x@other.test> proto=ESMTP helo=<client.test>\n"
	if !strings.Contains(string(log), want) {
		t.Errorf("maillog lacks %q", want)
	}

	out, err := exec.Command("pflogsumm", "--syslog-name=holdfast", maillog).CombinedOutput()
	if err != nil {
		t.Fatalf("pflogsumm: %v\n%s", err, out)
	}
	for what, want := range map[string]int{"received": 5, "delivered": 4, "deferred": 1, "bounced": 1, "rejected": 2} {
		if got := pflogsummCount(string(out), what); got != want {
			t.Errorf("pflogsumm %s = %d, want %d", what, got, want)
		}
	}
	if t.Failed() {
		t.Logf("pflogsumm:\n%s\nmaillog:\n%s", out, log)
	}

	// fail2ban's postfix filter, told the daemon name holdfast/...: the
	// default mode finds the relay denials, mode auth the failed AUTH.
	for mode, want := range map[string]string{"more": "2", "auth": "1"} {
		filter := `postfix[mode=` + mode + `, _daemon=holdfast/\w+]`
		out, err = exec.Command("fail2ban-regex", "--print-all-matched", maillog, filter).CombinedOutput()
		if err != nil {
			t.Fatalf("fail2ban-regex: %v\n%s", err, out)
		}
		m := regexp.MustCompile(`Lines: \d+ lines, \d+ ignored, (\d+) matched`).FindSubmatch(out)
		if m == nil || string(m[1]) != want {
			t.Errorf("fail2ban-regex %s matched %s lines, want %s:\n%s", filter, m, want, out)
		}
	}
}

// pflogsummCount reads "  N  what" from pflogsumm's grand totals.
func pflogsummCount(out, what string) int {
	m := regexp.MustCompile(`(?m)^\s*(\d+)\s+` + what + `\b`).FindStringSubmatch(out)
	if m == nil {
		return -1
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

func dial(t *testing.T, addr string) *smtp.Client {
	t.Helper()
	c, err := smtp.Dial(addr)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Hello("client.test"); err != nil {
		t.Fatal(err)
	}
	return c
}

func send(t *testing.T, addr, from, to string) {
	t.Helper()
	c := dial(t, addr)
	defer c.Close()
	if err := c.SendMail(from, []string{to}, strings.NewReader("Subject: test\r\n\r\nbody\r\n")); err != nil {
		t.Fatalf("send to %s: %v", to, err)
	}
	c.Quit()
}

func refused(t *testing.T, addr, to string) {
	t.Helper()
	c := dial(t, addr)
	defer c.Close()
	if err := c.Mail("s@example.org", nil); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt(to, nil); err == nil {
		t.Fatalf("relay to %s accepted", to)
	}
	c.Quit()
}

func authFails(t *testing.T, addr string) {
	t.Helper()
	c := dial(t, addr)
	defer c.Close()
	if err := c.Auth(sasl.NewPlainClient("", "alice", "wrong")); err == nil {
		t.Fatal("AUTH with a wrong password succeeded")
	}
	c.Quit()
}
