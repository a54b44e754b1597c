package timerslack

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"syscall"
	"testing"
)

// TestMain makes the test binary, started with "serve" as its first
// argument, report what the package's init did instead of testing.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == "serve" {
		slack, _, _ := syscall.RawSyscall(syscall.SYS_PRCTL, prGetTimerSlack, 0, 0)
		fmt.Printf("pid=%d slack=%d execd=%v env=%q args=%q\n", os.Getpid(), slack, execd, os.Getenv(env), os.Args[1:])
		os.Exit(0)
	}
	os.Exit(m.Run())
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

// With Linux's default slack, serve runs again as the same process with
// Slack, its arguments, and no trace of the marker in its environment.
func TestReexec(t *testing.T) {
	pid, got := start(t, linuxDefault)
	want := fmt.Sprintf(`pid=%d slack=%d execd=true env="" args=["serve" "-c" "x"]`, pid, Slack)
	if got != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
}

// A slack set on purpose (systemd's TimerSlackNSec=) is kept, without an
// exec.
func TestSlackSetKept(t *testing.T) {
	pid, got := start(t, 70_000)
	want := fmt.Sprintf(`pid=%d slack=70000 execd=false env="" args=["serve" "-c" "x"]`, pid)
	if got != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
}
