package timerslack

import (
	"fmt"
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
		fmt.Printf("pid=%d slack=%d execd=%v env=%v args=%q names=%q\n", os.Getpid(), slack, execd, marked, os.Args[1:], names())
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

// start runs the test binary as `serve -c x` from a thread whose timer
// slack is slack (the child inherits it) and returns the child's pid
// and its report.
func start(t *testing.T, slack uintptr) (int, string) {
	t.Helper()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	old, _, _ := syscall.RawSyscall(syscall.SYS_PRCTL, prGetTimerSlack, 0, 0)
	if _, _, errno := syscall.RawSyscall(syscall.SYS_PRCTL, prSetTimerSlack, slack, 0); errno != 0 {
		t.Fatalf("prctl: %v", errno)
	}
	defer syscall.RawSyscall(syscall.SYS_PRCTL, prSetTimerSlack, old, 0)
	cmd := exec.Command(os.Args[0], "serve", "-c", "x")
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("%v: %s", err, out.String())
	}
	return cmd.Process.Pid, strings.TrimSpace(out.String())
}

// name is the name (comm) the kernel gives the test binary: the base of
// its file's name, cut to 15 bytes.
func name() string {
	n := filepath.Base(os.Args[0])
	return n[:min(len(n), 15)]
}

// With Linux's default slack, serve runs again as the same process with
// Slack, its arguments, its name on every thread (not "exe", the name an
// exec of /proc/self/exe gives), and no trace of the marker in its
// environment.
func TestReexec(t *testing.T) {
	pid, got := start(t, linuxDefault)
	want := fmt.Sprintf(`pid=%d slack=%d execd=true env=false args=["serve" "-c" "x"] names=[%q]`, pid, Slack, name())
	if got != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
}

// A slack set on purpose (systemd's TimerSlackNSec=) is kept, without an
// exec.
func TestSlackSetKept(t *testing.T) {
	pid, got := start(t, 70_000)
	want := fmt.Sprintf(`pid=%d slack=70000 execd=false env=false args=["serve" "-c" "x"] names=[%q]`, pid, name())
	if got != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
}
