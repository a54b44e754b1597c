package schedslice

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestMain makes the test binary, started with "serve" as its first
// argument, report the scheduling of each of its threads instead of
// testing: one "policy nice slice" line per thread.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == "serve" {
		runtime.GC() // let the runtime start the threads it will
		tasks, _ := os.ReadDir("/proc/self/task")
		for _, t := range tasks {
			var tid int
			fmt.Sscan(t.Name(), &tid)
			a, err := unix.SchedGetAttr(tid, 0)
			if err != nil {
				fmt.Printf("%d error %v\n", tid, err)
				continue
			}
			fmt.Printf("%d %d %d %d\n", tid, a.Policy, a.Nice, a.Runtime)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// threads runs the test binary as `serve` from a new thread that first
// runs prep (its scheduling is the child's), and returns the child's
// report: policy, nice and slice per thread.
func threads(t *testing.T, prep func() error) [][3]int64 {
	t.Helper()
	type result struct {
		out string
		err error
	}
	done := make(chan result)
	go func() {
		// The thread's scheduling changes for good: it ends with the
		// goroutine (no UnlockOSThread).
		runtime.LockOSThread()
		if err := prep(); err != nil {
			done <- result{err: err}
			return
		}
		cmd := exec.Command(os.Args[0], "serve")
		// GORACE: under -race, a child would wait 1 s at its exit.
		cmd.Env = append(os.Environ(), "GORACE=atexit_sleep_ms=0")
		out, err := cmd.CombinedOutput()
		done <- result{string(out), err}
	}()
	r := <-done
	if r.err != nil {
		t.Fatalf("child: %v: %s", r.err, r.out)
	}
	var got [][3]int64
	for _, line := range strings.Split(strings.TrimSpace(r.out), "\n") {
		var tid, policy, nice, slice int64
		if n, _ := fmt.Sscan(line, &tid, &policy, &nice, &slice); n != 4 {
			t.Fatalf("child reported %q", line)
		}
		got = append(got, [3]int64{policy, nice, slice})
	}
	if len(got) < 2 {
		t.Fatalf("child reported %d threads: %s", len(got), r.out)
	}
	return got
}

// wantSlice is the slice the package leaves a fair thread with: Slice,
// or none (0) on a kernel that reports none (before Linux 6.12), where
// the package changes nothing and the tests check just that.
func wantSlice(t *testing.T) int64 {
	a, err := unix.SchedGetAttr(0, 0)
	if err != nil {
		t.Fatalf("sched_getattr: %v", err)
	}
	if a.Runtime == 0 {
		t.Log("this kernel reports no scheduler slice: checking that nothing changes")
		return 0
	}
	return Slice
}

func TestEveryThread(t *testing.T) {
	want := wantSlice(t)
	for _, th := range threads(t, func() error { return nil }) {
		if th[0] != unix.SCHED_NORMAL || th[2] != want {
			t.Errorf("thread policy %d slice %d, want %d and %d", th[0], th[2], unix.SCHED_NORMAL, want)
		}
	}
}

// TestKeepsPolicyAndNice: a daemon started at nice 5 under SCHED_BATCH
// (a unit's Nice= and CPUSchedulingPolicy=batch) keeps both.
func TestKeepsPolicyAndNice(t *testing.T) {
	want := wantSlice(t)
	prep := func() error {
		a, err := unix.SchedGetAttr(0, 0)
		if err != nil {
			return err
		}
		a.Policy, a.Nice, a.Flags = unix.SCHED_BATCH, 5, 0
		return unix.SchedSetAttr(0, a, 0)
	}
	for _, th := range threads(t, prep) {
		if th != [3]int64{unix.SCHED_BATCH, 5, want} {
			t.Errorf("thread policy, nice, slice = %v, want %d, 5, %d", th, unix.SCHED_BATCH, want)
		}
	}
}

// TestOtherPolicyKept: a thread under SCHED_IDLE is not given a slice.
func TestOtherPolicyKept(t *testing.T) {
	done := make(chan bool)
	go func() {
		runtime.LockOSThread() // ends with the goroutine
		if err := unix.SchedSetAttr(0, &unix.SchedAttr{Policy: unix.SCHED_IDLE}, 0); err != nil {
			t.Errorf("SCHED_IDLE: %v", err)
			done <- false
			return
		}
		done <- !set(unix.Gettid(), Slice)
	}()
	if !<-done {
		t.Error("set changed a SCHED_IDLE thread")
	}
}
