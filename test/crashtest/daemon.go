// Package crashtest drives the built holdfast binary as a separate process:
// it builds ./cmd/holdfast once per test binary, writes a configuration,
// starts `holdfast serve`, kills it with SIGKILL, restarts it and stops it.
// Its own tests prove that acknowledged mail survives crashes under load;
// test/relaytest uses the same harness for open-relay and abuse tests.
//
// Everything runs on loopback: the daemon listens on 127.0.0.1 and delivers
// to a Sink, a go-smtp server that stands in for the customer's MTA.
package crashtest

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	gobuild "go/build"
	"net"
	"net/textproto"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/holdfast-mta/holdfast/internal/testutil"
)

// pkgPath is the import path of the command under test.
const pkgPath = "github.com/holdfast-mta/holdfast/cmd/holdfast"

var build struct {
	once sync.Once
	dir  string
	bin  string
	err  error
}

// Main is the body of a TestMain: it runs the tests and removes the
// binary that Binary built.
//
//	func TestMain(m *testing.M) { os.Exit(crashtest.Main(m)) }
func Main(m *testing.M) int {
	code := m.Run()
	if build.dir != "" {
		os.RemoveAll(build.dir)
	}
	return code
}

// Binary builds the holdfast command once per test process and returns the
// path of the executable. Set HOLDFAST_RACE=1 to build it with -race.
func Binary(t testing.TB) string {
	t.Helper()
	build.once.Do(func() {
		dir, err := os.MkdirTemp("", "holdfast-bin-")
		if err != nil {
			build.err = err
			return
		}
		build.dir = dir
		bin := filepath.Join(dir, "holdfast")
		args := []string{"build", "-o", bin}
		if os.Getenv("HOLDFAST_RACE") == "1" {
			args = append(args, "-race")
		}
		args = append(args, pkgPath)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		out, err := exec.CommandContext(ctx, goTool(), args...).CombinedOutput()
		if err != nil {
			build.err = fmt.Errorf("go build %s: %v\n%s", pkgPath, err, out)
			return
		}
		build.bin = bin
	})
	if build.err != nil {
		t.Fatal(build.err)
	}
	return build.bin
}

func goTool() string {
	if root := os.Getenv("GOROOT"); root != "" {
		if p := filepath.Join(root, "bin", "go"); fileExists(p) {
			return p
		}
	}
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	// The toolchain that built this test binary.
	if p := filepath.Join(gobuild.Default.GOROOT, "bin", "go"); fileExists(p) {
		return p
	}
	return "go"
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// Daemon is one holdfast installation: a configuration file, a queue
// directory, and at most one running `holdfast serve` process at a time.
type Daemon struct {
	t      testing.TB
	Bin    string
	Dir    string            // private directory of this installation
	Config string            // path of the configuration file
	Params map[string]string // written to Config by WriteConfig
	// Wrap, if set, is a command line that runs the daemon and execs it
	// in the same process, as `prlimit --nofile=128:128 --` does.
	Wrap []string
	// Env is added to the test's environment for the daemon
	// ("GOMEMLIMIT=100MiB").
	Env []string

	mu      sync.Mutex
	addr    string
	cmd     *exec.Cmd
	exited  chan struct{}
	waitErr error
	logf    *os.File
	starts  int
}

// NewDaemon prepares an installation in a fresh temporary directory with
// the given parameters on top of a test baseline (queue and control socket
// in the directory, JSON logs). A parameter given the
// value "" is left out of the file. Stop is registered as cleanup.
func NewDaemon(t testing.TB, params map[string]string) *Daemon {
	t.Helper()
	dir := t.TempDir()
	d := &Daemon{
		t:      t,
		Bin:    Binary(t),
		Dir:    dir,
		Config: filepath.Join(dir, "holdfast.cf"),
		Params: map[string]string{
			"myhostname":      "relay.test",
			"queue_directory": filepath.Join(dir, "queue"),
			"control_socket":  filepath.Join(dir, "control.sock"),
			"log_format":      "json",
		},
	}
	for k, v := range params {
		d.Params[k] = v
	}
	if err := os.MkdirAll(d.Params["queue_directory"], 0o700); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		t0 := time.Now()
		if err := d.Stop(); err != nil {
			t.Logf("holdfast serve at cleanup: %v", err)
		}
		if n := strings.Count(d.Log(), "WARNING: DATA RACE"); n > 0 {
			t.Errorf("the race detector reported %d data races in holdfast serve (HOLDFAST_RACE=1):\n%s", n, d.raceReports(3))
		}
		if took := time.Since(t0); took > 3*time.Second {
			t.Logf("graceful stop took %v", took.Round(100*time.Millisecond))
		}
	})
	return d
}

// QueueDB is the path of the queue database.
func (d *Daemon) QueueDB() string {
	return filepath.Join(d.Params["queue_directory"], "queue.db")
}

// Addr is the address the SMTP server listens on ("" before Start).
func (d *Daemon) Addr() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.addr
}

// WriteConfig writes Params (and smtpd_listen) to the configuration file.
func (d *Daemon) WriteConfig() {
	d.t.Helper()
	var b bytes.Buffer
	b.WriteString("# written by test/crashtest\n")
	keys := make([]string, 0, len(d.Params))
	for k := range d.Params {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if d.Params[k] == "" || k == "smtpd_listen" {
			continue
		}
		fmt.Fprintf(&b, "%s = %s\n", k, d.Params[k])
	}
	if d.addr != "" {
		fmt.Fprintf(&b, "smtpd_listen = %s\n", d.addr)
	}
	if err := os.WriteFile(d.Config, b.Bytes(), 0o600); err != nil {
		d.t.Fatal(err)
	}
}

// freePort returns a loopback address that was free a moment ago. Start
// retries with another one if the daemon cannot bind it.
func freePort() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	addr := l.Addr().String()
	l.Close()
	return addr, nil
}

// Start runs `holdfast serve -c CONFIG` and waits until it greets SMTP
// clients. The first start picks a port; later starts (after Kill or Stop)
// reuse it, retrying while the kernel still holds it.
func (d *Daemon) Start() {
	d.t.Helper()
	if err := d.TryStart(10 * time.Second); err != nil {
		d.t.Fatalf("start holdfast: %v\n%s", err, d.LogTail(40))
	}
}

// TryStart is Start returning the error: the process exited before it
// listened (its output is in Log), or it did not greet within timeout.
func (d *Daemon) TryStart(timeout time.Duration) error {
	var err error
	for try := 0; try < 5; try++ {
		d.mu.Lock()
		if d.addr == "" || (try > 0 && d.starts == 0) {
			a, perr := freePort()
			if perr != nil {
				d.mu.Unlock()
				return perr
			}
			d.addr = a
		}
		d.mu.Unlock()
		err = d.spawn(timeout)
		if err == nil {
			d.mu.Lock()
			d.starts++
			d.mu.Unlock()
			return nil
		}
		if !strings.Contains(d.Log(), "address already in use") {
			return err
		}
		time.Sleep(time.Duration(try+1) * 100 * time.Millisecond)
	}
	return err
}

func (d *Daemon) spawn(timeout time.Duration) error {
	d.WriteConfig()
	d.mu.Lock()
	if d.cmd != nil {
		d.mu.Unlock()
		return errors.New("already running")
	}
	logf, err := os.OpenFile(filepath.Join(d.Dir, "holdfast.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		d.mu.Unlock()
		return err
	}
	fmt.Fprintf(logf, "=== start %d at %s\n", d.starts+1, time.Now().Format(time.RFC3339Nano))
	argv := append(append([]string{}, d.Wrap...), d.Bin, "serve", "-c", d.Config)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout = logf
	cmd.Stderr = logf
	if len(d.Env) > 0 {
		cmd.Env = append(os.Environ(), d.Env...)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		d.mu.Unlock()
		return err
	}
	exited := make(chan struct{})
	d.cmd, d.exited, d.logf = cmd, exited, logf
	addr := d.addr
	d.mu.Unlock()
	go func() {
		werr := cmd.Wait()
		d.mu.Lock()
		d.waitErr = werr
		d.mu.Unlock()
		close(exited)
	}()
	gone := false
	if testutil.WaitFor(timeout, func() bool {
		select {
		case <-exited:
			gone = true
			return true
		default:
		}
		return greets(addr)
	}) && !gone {
		return nil
	}
	if gone {
		d.reap()
		return fmt.Errorf("holdfast serve exited before listening: %v", d.lastWaitErr())
	}
	d.Kill()
	return fmt.Errorf("holdfast serve did not greet on %s within %v", addr, timeout)
}

// greets dials addr, reads a 220 greeting and says QUIT, waiting for the
// server to close so that the probe no longer counts against any limit.
func greets(addr string) bool {
	conn, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(2 * time.Second))
	tp := textproto.NewConn(conn)
	if _, _, err := tp.ReadResponse(220); err != nil {
		return false
	}
	if err := tp.PrintfLine("QUIT"); err == nil {
		tp.ReadResponse(221)
		bufio.NewReader(conn).ReadString('\n') // until EOF
	}
	return true
}

func (d *Daemon) lastWaitErr() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.waitErr
}

// reap forgets an exited process.
func (d *Daemon) reap() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.logf != nil {
		d.logf.Close()
		d.logf = nil
	}
	d.cmd = nil
}

// Running reports whether a serve process is running.
func (d *Daemon) Running() bool {
	d.mu.Lock()
	cmd, exited := d.cmd, d.exited
	d.mu.Unlock()
	if cmd == nil {
		return false
	}
	select {
	case <-exited:
		return false
	default:
		return true
	}
}

// PID is the process id of the running daemon, 0 if none.
func (d *Daemon) PID() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cmd == nil || d.cmd.Process == nil {
		return 0
	}
	return d.cmd.Process.Pid
}

// Kill sends SIGKILL and waits for the process to be gone.
func (d *Daemon) Kill() {
	d.signal(syscall.SIGKILL, 10*time.Second)
}

// Stop sends SIGTERM, waits up to 15 s for a graceful exit, then kills.
// It returns the process's exit error (nil for status 0).
func (d *Daemon) Stop() error {
	return d.signal(syscall.SIGTERM, 15*time.Second)
}

func (d *Daemon) signal(sig syscall.Signal, wait time.Duration) error {
	d.mu.Lock()
	cmd, exited := d.cmd, d.exited
	d.mu.Unlock()
	if cmd == nil {
		return nil
	}
	cmd.Process.Signal(sig)
	select {
	case <-exited:
	case <-time.After(wait):
		cmd.Process.Signal(syscall.SIGKILL)
		<-exited
		d.reap()
		return fmt.Errorf("no exit within %v after %v", wait, sig)
	}
	err := d.lastWaitErr()
	d.reap()
	return err
}

// Log is everything the daemon (all its runs) wrote to stdout and stderr.
func (d *Daemon) Log() string {
	b, _ := os.ReadFile(filepath.Join(d.Dir, "holdfast.log"))
	return string(b)
}

// raceReports returns the first n race reports from the log.
func (d *Daemon) raceReports(n int) string {
	parts := strings.Split(d.Log(), "WARNING: DATA RACE")
	var out []string
	for i := 1; i < len(parts) && i <= n; i++ {
		r := parts[i]
		if j := strings.Index(r, "=================="); j >= 0 {
			r = r[:j]
		}
		out = append(out, "WARNING: DATA RACE"+r)
	}
	return strings.Join(out, "\n")
}

// LogTail is the last n lines of Log.
func (d *Daemon) LogTail(n int) string {
	lines := strings.Split(strings.TrimRight(d.Log(), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Command runs `holdfast ARGS... -c CONFIG` (the -c goes right after the
// subcommand words given in args) and returns its output and exit status.
func (d *Daemon) Command(timeout time.Duration, args ...string) (stdout, stderr string, code int) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	full := append(append([]string{}, args...), "-c", d.Config)
	cmd := exec.CommandContext(ctx, d.Bin, full...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	code = 0
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		} else {
			code = -1
			e.WriteString(err.Error())
		}
	}
	return o.String(), e.String(), code
}

// RSS is the resident set size of the running daemon in bytes (0 if it is
// not running or /proc is unavailable).
func (d *Daemon) RSS() int64 { return d.ProcStatus("VmRSS") }

// ProcStatus is a size field of /proc/PID/status of the running daemon
// in bytes ("VmRSS", "VmHWM" (peak RSS), "RssAnon", "RssFile"); 0 if it
// is not running or /proc is unavailable.
func (d *Daemon) ProcStatus(field string) int64 {
	pid := d.PID()
	if pid == 0 {
		return 0
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			var kb int64
			fmt.Sscanf(strings.TrimSpace(v), "%d", &kb)
			return kb * 1024
		}
	}
	return 0
}
