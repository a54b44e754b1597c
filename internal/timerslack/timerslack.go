// Package timerslack starts `holdfast serve` with a timer slack of
// Slack instead of Linux's default. Imported for its init only, by
// command holdfast.
//
// The timer slack (prctl PR_SET_TIMERSLACK) is how late the kernel may
// wake a thread that sleeps on a timer, so that it can serve several
// wake-ups with one; Linux's default is 50 µs. The sleeper it is for is
// the Go runtime's sysmon, a thread of its own that watches the
// scheduler: it sleeps 20 µs at a time for as long as it keeps finding a
// P held by a system call that has lasted one of its ticks (and after
// each wake-up from its deep sleep), and doubles its sleep only after
// 50 ticks without one. The queue's commits hold a P in fdatasync for
// 100-300 µs several hundred times a second, so with the default slack
// sysmon never slowed down: about 10 % of the daemon's CPU and half of
// its context switches at 10 SMTP sessions. With a tick longer than an
// fdatasync it seldom finds one to take, and backs off. Nothing in the
// Go runtime sets its period otherwise. Measured: docs/benchmarks.md,
// *Issue 16: the timer slack of the daemon*.
//
// A thread takes its slack from the thread that creates it, and the
// runtime creates sysmon before any package's init runs, so the only
// way to give sysmon the slack is to set it on this thread and exec the
// program again: the new image's threads, sysmon first, are all created
// with it. This package's init does that as early as it can, before
// the packages that sort after it (most of the daemon's) spend time in
// their own inits. The process keeps its pid (for systemd), its open
// descriptors, its arguments, its environment and its name (comm, which
// ps, top, pgrep and journald's _COMM show: an exec of /proc/self/exe
// would name it "exe"; the new image takes the old name back); the exec
// costs a few milliseconds of start-up. A slack other than Linux's default was set
// on purpose (systemd's TimerSlackNSec=, which the packaged unit sets,
// so that no exec is needed there) and is kept; when the exec fails the
// daemon runs on with the slack it had.
//
// It goes by the first argument alone: a front end started by another
// name (sendmail, postqueue ...) with "serve" as its first argument is
// exec'd once more the same way, which changes nothing else.
//
// The cost at run time: any timer of the daemon may fire up to Slack
// late (the netpoller's own timeouts are whole milliseconds already);
// the SMTP timeouts are seconds.
package timerslack

import (
	"os"
	"runtime"
	"syscall"
	"unsafe"
)

// Slack is the timer slack `holdfast serve` runs with, in nanoseconds.
// 250 µs did not calm sysmon (shorter than a commit's fdatasync on the
// machine measured); 500 µs and 1 ms did, equally.
const Slack = 500_000

// linuxDefault is the timer slack of a process nobody set one for.
const linuxDefault = 50_000

// env marks the image this package exec'd, so that it does not exec
// again, and carries the process's name (comm) before the exec; the new
// image takes that name back and removes env from its environment.
const env = "HOLDFAST_TIMER_SLACK_SET"

const (
	prSetName       = 15 // PR_SET_NAME
	prGetName       = 16 // PR_GET_NAME
	prSetTimerSlack = 29 // PR_SET_TIMERSLACK
	prGetTimerSlack = 30 // PR_GET_TIMERSLACK
)

// execd tells that this image is the one reexec started.
var execd bool

func init() {
	if len(os.Args) < 2 || os.Args[1] != "serve" {
		return
	}
	if name, ok := os.LookupEnv(env); ok {
		os.Unsetenv(env)
		execd = true
		rename(name)
		return
	}
	reexec(os.Args)
}

// rename gives the threads of this image, named "exe" by the exec of
// /proc/self/exe, the process's name from before the exec: the main
// thread's (init runs on it) is the process's name, and the threads the
// runtime started already (sysmon ...) pass theirs on to the threads
// they start.
func rename(name string) {
	if name == "" {
		return
	}
	b := append([]byte(name), 0)
	syscall.RawSyscall(syscall.SYS_PRCTL, prSetName, uintptr(unsafe.Pointer(&b[0])), 0)
	// A thread started meanwhile by one not renamed yet is named "exe"
	// too: look again until a look finds no thread it has not seen.
	seen := map[string]bool{}
	for range 4 {
		tasks, _ := os.ReadDir("/proc/self/task")
		fresh := false
		for _, t := range tasks {
			if !seen[t.Name()] {
				seen[t.Name()], fresh = true, true
				os.WriteFile("/proc/self/task/"+t.Name()+"/comm", []byte(name), 0)
			}
		}
		if !fresh {
			return
		}
	}
}

// comm is the name of the calling thread (PR_GET_NAME).
func comm() string {
	var b [16]byte
	syscall.RawSyscall(syscall.SYS_PRCTL, prGetName, uintptr(unsafe.Pointer(&b[0])), 0)
	n := 0
	for n < len(b) && b[n] != 0 {
		n++
	}
	return string(b[:n])
}

// reexec sets Slack on this thread and execs the program again with
// argv; it returns only when it did not exec.
func reexec(argv []string) {
	runtime.LockOSThread() // prctl and execve on the same thread
	defer runtime.UnlockOSThread()
	cur, _, errno := syscall.RawSyscall(syscall.SYS_PRCTL, prGetTimerSlack, 0, 0)
	if errno != 0 || cur != linuxDefault {
		return
	}
	if _, _, errno := syscall.RawSyscall(syscall.SYS_PRCTL, prSetTimerSlack, Slack, 0); errno != 0 {
		return
	}
	syscall.Exec("/proc/self/exe", argv, append(os.Environ(), env+"="+comm()))
	syscall.RawSyscall(syscall.SYS_PRCTL, prSetTimerSlack, cur, 0)
}
