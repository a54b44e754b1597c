package main

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/holdfast-mta/holdfast/config"
)

// buildHoldfast builds the holdfast binary into a temporary directory.
func buildHoldfast(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "holdfast")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// runHoldfast runs the binary in dir and returns stdout, stderr and the
// exit status.
func runHoldfast(t *testing.T, bin, dir string, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return stdout.String(), stderr.String(), ee.ExitCode()
	}
	if err != nil {
		t.Fatalf("run %v: %v", args, err)
	}
	return stdout.String(), stderr.String(), 0
}

// TestConfigCommand runs the built binary's `config` subcommand.
func TestConfigCommand(t *testing.T) {
	bin := buildHoldfast(t)
	t.Run("outputs", func(t *testing.T) { testConfigOutputs(t, bin) })
	t.Run("all", func(t *testing.T) { testConfigAll(t, bin) })
	t.Run("errors", func(t *testing.T) { testConfigErrors(t, bin) })
	t.Run("example", func(t *testing.T) { testExampleConfig(t, bin) })
}

const testCF = `# test configuration
myhostname = mx.test.example
relay_domains = customer.tld,
    other.tld
fast_flush_domains = $relay_domains
smtpd_listen = 127.0.0.1:2525
queue_directory = /srv/holdfast
`

func writeCF(t *testing.T, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "holdfast.cf")
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func testConfigOutputs(t *testing.T, bin string) {
	cf := writeCF(t, testCF)
	tests := []struct {
		name   string
		args   []string
		stdout string
	}{
		{"-n", []string{"-c", cf, "-n"}, `fast_flush_domains = $relay_domains
myhostname = mx.test.example
queue_directory = /srv/holdfast
relay_domains = customer.tld, other.tld
smtpd_listen = 127.0.0.1:2525
`},
		{"-n -x", []string{"-n", "-x", "-c", cf}, `fast_flush_domains = customer.tld, other.tld
myhostname = mx.test.example
queue_directory = /srv/holdfast
relay_domains = customer.tld, other.tld
smtpd_listen = 127.0.0.1:2525
`},
		{"-d NAME", []string{"-c", cf, "-d", "smtpd_listen", "queue_directory", "control_socket", "fast_flush_domains", "maximal_queue_lifetime", "etrn_reply_counts", "metrics_listen"}, `smtpd_listen = :25
queue_directory = /var/spool/holdfast
control_socket = $queue_directory/control.sock
fast_flush_domains = $relay_domains
maximal_queue_lifetime = 5d
etrn_reply_counts = no
metrics_listen = 
`},
		{"-d -x NAME", []string{"-d", "-x", "control_socket"}, "control_socket = /var/spool/holdfast/control.sock\n"},
		{"NAME", []string{"-c", cf, "fast_flush_domains", "control_socket", "smtpd_banner", "minimal_backoff_time"}, `fast_flush_domains = $relay_domains
control_socket = $queue_directory/control.sock
smtpd_banner = $myhostname ESMTP $mail_name
minimal_backoff_time = 300s
`},
		{"NAME -x after name", []string{"-c", cf, "control_socket", "-x", "smtpd_banner"}, `control_socket = /srv/holdfast/control.sock
smtpd_banner = mx.test.example ESMTP holdfast
`},
		{"-n NAME at default prints nothing", []string{"-c", cf, "-n", "relayhost", "myhostname"}, "myhostname = mx.test.example\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stdout, stderr, code := runHoldfast(t, bin, t.TempDir(), append([]string{"config"}, tt.args...)...)
			if code != 0 || stderr != "" {
				t.Fatalf("exit %d, stderr %q", code, stderr)
			}
			if stdout != tt.stdout {
				t.Errorf("stdout\n got %q\nwant %q", stdout, tt.stdout)
			}
		})
	}
}

func testConfigAll(t *testing.T, bin string) {
	cf := writeCF(t, testCF+"my_own = x\n")
	stdout, stderr, code := runHoldfast(t, bin, t.TempDir(), "config", "-c", cf)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if want := "holdfast: warning: " + cf + ":8: my_own: unknown parameter\n"; stderr != want {
		t.Errorf("stderr %q, want %q", stderr, want)
	}
	lines := strings.Split(strings.TrimSuffix(stdout, "\n"), "\n")
	c, err := config.Load(cf)
	if err != nil {
		t.Fatal(err)
	}
	if len(lines) != len(c.Names()) {
		t.Errorf("%d lines, want %d parameters", len(lines), len(c.Names()))
	}
	if !sort.StringsAreSorted(lines) {
		t.Error("output is not sorted")
	}
	for _, want := range []string{"relay_domains = customer.tld, other.tld", "my_own = x", "reject_code = 554", "default_destination_concurrency_limit = 20", "log_format = json"} {
		if !strings.Contains(stdout, "\n"+want+"\n") {
			t.Errorf("output lacks %q", want)
		}
	}
}

func testConfigErrors(t *testing.T, bin string) {
	cf := writeCF(t, testCF)
	stdout, stderr, code := runHoldfast(t, bin, t.TempDir(), "config", "-c", cf, "myhostname", "no_such_parameter")
	if code != 1 || stdout != "myhostname = mx.test.example\n" || stderr != "holdfast config: no_such_parameter: unknown parameter\n" {
		t.Errorf("unknown name: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	if _, stderr, code = runHoldfast(t, bin, t.TempDir(), "config", "-d", "no_such_parameter"); code != 1 || !strings.Contains(stderr, "no_such_parameter: unknown parameter") {
		t.Errorf("-d unknown name: exit %d, stderr %q", code, stderr)
	}
	bad := writeCF(t, "myhostname = x\nsoft_bounce = perhaps\n")
	if _, stderr, code = runHoldfast(t, bin, t.TempDir(), "config", "-c", bad); code != exConfig || stderr != "holdfast: "+bad+`:2: soft_bounce: bad boolean value "perhaps" (want yes or no)`+"\n" {
		t.Errorf("bad value: exit %d, stderr %q", code, stderr)
	}
	if _, stderr, code = runHoldfast(t, bin, t.TempDir(), "config", "-c", filepath.Join(t.TempDir(), "missing.cf")); code != exConfig || !strings.Contains(stderr, "no such file") {
		t.Errorf("missing file: exit %d, stderr %q", code, stderr)
	}
	if _, _, code = runHoldfast(t, bin, t.TempDir(), "config", "-n", "-d"); code != exUsage {
		t.Errorf("-n -d: exit %d", code)
	}
	if _, _, code = runHoldfast(t, bin, t.TempDir(), "config", "-q"); code != exUsage {
		t.Errorf("bad flag: exit %d", code)
	}
}

// testExampleConfig runs from the repository root, as make run does: the
// example file loads without warnings and its relative transport table is
// found.
func testExampleConfig(t *testing.T, bin string) {
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	stdout, stderr, code := runHoldfast(t, bin, root, "config", "-c", "examples/holdfast.cf", "-x", "smtpd_listen", "queue_directory", "control_socket", "fast_flush_domains", "defer_transports", "transport_maps", "smtpd_etrn_restrictions", "log_format")
	want := `smtpd_listen = 127.0.0.1:2525
queue_directory = ./var
control_socket = ./var/control.sock
fast_flush_domains = customer.tld, other.tld
defer_transports = etrn-only
transport_maps = hash:examples/transport
smtpd_etrn_restrictions = permit_mynetworks, reject
log_format = console
`
	if code != 0 || stderr != "" || stdout != want {
		t.Fatalf("exit %d, stderr %q\nstdout %q\nwant   %q", code, stderr, stdout, want)
	}
	t.Chdir(root)
	var errs bytes.Buffer
	c, code := loadConfig("examples/holdfast.cf", &errs)
	if c == nil || errs.Len() != 0 {
		t.Fatalf("loadConfig: %d %s", code, errs.String())
	}
	tm, err := c.Transport()
	if err != nil {
		t.Fatal(err)
	}
	if v, ok, err := tm.Lookup("someone@customer.tld"); err != nil || !ok || v != "etrn-only:[127.0.0.1]:2626" {
		t.Errorf("transport for customer.tld = %q, %v, %v", v, ok, err)
	}
	if _, ok, _ := tm.Lookup("someone@other.tld"); ok {
		t.Error("other.tld has a transport entry")
	}
	ff, err := c.Domains("fast_flush_domains")
	if err != nil {
		t.Fatal(err)
	}
	if ok, _ := ff.Match("customer.tld"); !ok {
		t.Error("customer.tld is not eligible for fast flush")
	}
}

func TestLoadConfigWarnings(t *testing.T) {
	var stderr bytes.Buffer
	cf := writeCF(t, "myhostname = x.example\nfrobnicate = yes\n")
	c, code := loadConfig(cf, &stderr)
	if c == nil || code != 0 {
		t.Fatalf("loadConfig = %v, %d", c, code)
	}
	if want := "holdfast: warning: " + cf + ":2: frobnicate: unknown parameter\n"; stderr.String() != want {
		t.Errorf("stderr %q, want %q", stderr.String(), want)
	}
}
