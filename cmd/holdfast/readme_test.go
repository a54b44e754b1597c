package main

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/holdfast-mta/holdfast/internal/testutil"
)

// TestReadmeTryIt runs the README's try-it steps as written, with the two
// fixed ports swapped for free ones and `make run` for the binary it
// builds: the relay, Debian's aiosmtpd as the customer's server, swaks,
// the queue listing and the ETRN through nc. The tools come from
// .ci/run's install step.
func TestReadmeTryIt(t *testing.T) {
	steps := readmeSteps(t)
	python := pythonWithAiosmtpd()
	for _, tool := range []string{"swaks", "nc", "bash"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s is not installed (.ci/run installs it: apt-get install swaks netcat-openbsd python3-aiosmtpd)", tool)
		}
	}
	if python == "" {
		t.Skip("no python3 with aiosmtpd (.ci/run installs Debian's python3-aiosmtpd)")
	}
	bin := buildHoldfast(t)
	dir := t.TempDir()
	relayPort, sinkPort := freePort(t), freePort(t)
	copyExample(t, dir, "holdfast.cf", nil)
	copyExample(t, dir, "transport", strings.NewReplacer("2626", sinkPort))
	mkdir(t, filepath.Join(dir, "var"))
	subst := strings.NewReplacer(
		"make run", bin+" serve -c examples/holdfast.cf -o smtpd_listen=127.0.0.1:"+relayPort,
		"./bin/holdfast", bin,
		"python3 -m aiosmtpd", python+" -m aiosmtpd",
		"2525", relayPort, "2626", sinkPort)

	relay := startStep(t, dir, subst.Replace(steps[0]))
	sink := startStep(t, dir, subst.Replace(steps[1]))
	waitPort(t, relayPort, relay)
	waitPort(t, sinkPort, sink)

	want := []string{"250 2.0.0 Ok: queued as", "(deferred transport)", "250 Queuing started"}
	for i, step := range steps[2:] {
		cmd := exec.Command("bash", "-c", subst.Replace(step))
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), want[i]) {
			t.Fatalf("step %q: %v, want %q in:\n%s\nrelay log:\n%s", step, err, want[i], out, relay.String())
		}
	}
	testutil.Eventually(t, 30*time.Second, "the message at the customer's server", func() bool {
		return strings.Contains(sink.String(), "To: user@customer.tld")
	})
}

// readmeSteps returns the command lines between the try-it markers.
func readmeSteps(t *testing.T) []string {
	t.Helper()
	data, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok1 := strings.Cut(string(data), "<!-- try-it:begin -->\n")
	block, _, ok2 := strings.Cut(rest, "<!-- try-it:end -->")
	if !ok1 || !ok2 {
		t.Fatal("README.md has no try-it block")
	}
	var steps []string
	for _, line := range strings.Split(block, "\n") {
		if line = strings.TrimSpace(line); line != "" {
			steps = append(steps, line)
		}
	}
	if len(steps) != 5 {
		t.Fatalf("try-it block has %d steps, this test knows 5: %q", len(steps), steps)
	}
	return steps
}

// pythonWithAiosmtpd finds a python3 that can import aiosmtpd: the one on
// PATH, or Debian's, which python3-aiosmtpd installs into.
func pythonWithAiosmtpd() string {
	for _, p := range []string{"python3", "/usr/bin/python3"} {
		if exec.Command(p, "-c", "import aiosmtpd").Run() == nil {
			return p
		}
	}
	return ""
}

// startStep starts a long-running step (a server) in the background and
// stops it when the test ends.
func startStep(t *testing.T, dir, line string) *testutil.SyncBuffer {
	t.Helper()
	out := &testutil.SyncBuffer{}
	cmd := exec.Command("bash", "-c", "exec "+line)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	return out
}

func waitPort(t *testing.T, port string, log *testutil.SyncBuffer) {
	t.Helper()
	testutil.Eventually(t, 20*time.Second, "a listener on port "+port+"; output so far:\n"+log.String(), func() bool {
		c, err := net.Dial("tcp", "127.0.0.1:"+port)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
}

// freePort returns a port that was free a moment ago.
func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
}

// copyExample copies examples/NAME into dir/examples, rewritten by r.
func copyExample(t *testing.T, dir, name string, r *strings.Replacer) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("../../examples", name))
	if err != nil {
		t.Fatal(err)
	}
	if r != nil {
		data = []byte(r.Replace(string(data)))
	}
	mkdir(t, filepath.Join(dir, "examples"))
	if err := os.WriteFile(filepath.Join(dir, "examples", name), data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func mkdir(t *testing.T, path string) {
	t.Helper()
	if err := os.MkdirAll(path, 0o755); err != nil {
		t.Fatal(err)
	}
}
