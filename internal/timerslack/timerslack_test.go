package timerslack

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
)

// TestMain makes the test binary, started with "serve" as its first
// argument, report what the package's init did instead of testing.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == "serve" {
		slack, _, _ := syscall.RawSyscall(syscall.SYS_PRCTL, prGetTimerSlack, 0, 0)
		_, marked := os.LookupEnv(env)
		// fd 3: a descriptor inherited as systemd passes its sockets.
		_, ferr := os.NewFile(3, "inherited").Write([]byte("fd 3 kept"))
		fmt.Printf("pid=%d slack=%d execd=%v env=%v kept=%q fd3=%v args=%q names=%q\n", os.Getpid(), slack, execd, marked,
			os.Getenv("HOLDFAST_TEST_KEPT"), ferr == nil, os.Args, names())
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// names lists the distinct names (comm) of the process's threads, the
// main thread's first.
func names() []string {
	main, _ := os.ReadFile("/proc/self/comm")
	list := []string{strings.TrimSpace(string(main))}
	tasks, _ := os.ReadDir("/proc/self/task")
	for _, t := range tasks {
		b, _ := os.ReadFile("/proc/self/task/" + t.Name() + "/comm")
		if n := strings.TrimSpace(string(b)); !slices.Contains(list, n) {
			list = append(list, n)
		}
	}
	return list
}

// start runs the test binary (by the name bin) as `serve -c x` from a
// thread whose timer slack is slack (the child inherits it), with a
// variable of its own in its environment and a pipe as its fd 3, and
// returns the child's pid and its report.
func start(t *testing.T, slack uintptr, bin string) (int, string) {
	t.Helper()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	old, _, _ := syscall.RawSyscall(syscall.SYS_PRCTL, prGetTimerSlack, 0, 0)
	if _, _, errno := syscall.RawSyscall(syscall.SYS_PRCTL, prSetTimerSlack, slack, 0); errno != 0 {
		t.Fatalf("prctl: %v", errno)
	}
	defer syscall.RawSyscall(syscall.SYS_PRCTL, prSetTimerSlack, old, 0)
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	cmd := exec.Command(bin, "serve", "-c", "x")
	// GORACE: under -race, a child would wait 1 s at its exit.
	cmd.Env = append(os.Environ(), "HOLDFAST_TEST_KEPT=yes", "GORACE=atexit_sleep_ms=0")
	cmd.ExtraFiles = []*os.File{pw}
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("%v: %s", err, out.String())
	}
	if b, _ := io.ReadAll(pr); string(b) != "fd 3 kept" {
		t.Errorf("read %q from the child's fd 3", b)
	}
	return cmd.Process.Pid, strings.TrimSpace(out.String())
}

// name is the name (comm) the kernel gives a program started as bin:
// the base of the name, cut to 15 bytes.
func name(bin string) string {
	n := filepath.Base(bin)
	return n[:min(len(n), 15)]
}

// With Linux's default slack, serve runs again as the same process with
// Slack, its arguments, its environment, its descriptors, its name on
// every thread (not "exe", the name an exec of /proc/self/exe gives),
// and no trace of the marker in its environment.
func TestReexec(t *testing.T) {
	bin := os.Args[0]
	pid, got := start(t, linuxDefault, bin)
	want := fmt.Sprintf(`pid=%d slack=%d execd=true env=false kept="yes" fd3=true args=[%q "serve" "-c" "x"] names=[%q]`, pid, Slack, bin, name(bin))
	if got != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
}

// Started by another name (a front end's link, which command holdfast
// goes by: argv[0]), the program keeps that name as argv[0] and as its
// process name across the exec.
func TestReexecFrontEnd(t *testing.T) {
	self, err := filepath.Abs(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "sendmail")
	if err := os.Symlink(self, bin); err != nil {
		t.Fatal(err)
	}
	pid, got := start(t, linuxDefault, bin)
	want := fmt.Sprintf(`pid=%d slack=%d execd=true env=false kept="yes" fd3=true args=[%q "serve" "-c" "x"] names=["sendmail"]`, pid, Slack, bin)
	if got != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
}

// A slack set on purpose (systemd's TimerSlackNSec=) is kept, without an
// exec.
func TestSlackSetKept(t *testing.T) {
	bin := os.Args[0]
	pid, got := start(t, 70_000, bin)
	want := fmt.Sprintf(`pid=%d slack=70000 execd=false env=false kept="yes" fd3=true args=[%q "serve" "-c" "x"] names=[%q]`, pid, bin, name(bin))
	if got != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
}
