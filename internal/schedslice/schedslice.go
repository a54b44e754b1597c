// Package schedslice gives the threads of `holdfast serve` a scheduler
// slice of Slice instead of Linux's default. Imported by command
// holdfast for its init only.
//
// Linux's fair scheduler (EEVDF, since 6.6) lets a thread run for its
// slice before a thread it woke, of the same weight, takes the CPU from
// it; the default slice is 0.7 ms times 1 + log2 of the CPUs (1.4 ms on
// two). When an ETRN is answered the daemon goes straight on to the
// flush it started (the chunk's transaction, twenty connects), and on a
// machine with two CPUs both of its threads kept them: the client that
// had just been sent `250 Queuing started` waited for one, and the
// reply reached it more than 0.5 ms after it was written in 45 % of the
// rounds of a measurement (1.1-2.7 ms; sched traces showed the client's
// thread runnable behind the daemon's). With a slice of 100 µs the
// client runs within that: 7 % of the rounds (docs/benchmarks.md,
// *Issue 16: the daemon's scheduler slice*). The same holds for any
// process the daemon wakes on the same machine: a local client, a
// content filter, the next hop of a relay. The daemon itself is not
// slowed where it waits for others, and gives up the CPU a little more
// often where it competes for it (acceptance from one local client: -4 %).
//
// A slice is a thread's own (sched_setattr's sched_runtime for
// SCHED_OTHER and SCHED_BATCH, Linux 6.12 and later) and a thread
// inherits its creator's, so init sets it on every thread the process
// has by then: the Go runtime's threads created later inherit it. It
// changes nothing else: policy, nice value and flags are written back
// as read. A thread whose slice is already Slice or shorter (set on
// purpose, or inherited through the exec of package timerslack) is
// left as it is, and so is every thread on a kernel that reports no
// slice (before 6.12, where a fair thread has none to set) or under
// another policy (real-time, SCHED_IDLE). No privilege is needed.
package schedslice

import (
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// Slice is the scheduler slice of `holdfast serve`'s threads, in
// nanoseconds: the kernel's shortest (it clamps to 0.1-100 ms).
const Slice = 100_000

func init() {
	if len(os.Args) < 2 || os.Args[1] != "serve" {
		return
	}
	setAll(Slice)
}

// setAll gives every thread of the process the slice ns. A thread
// started meanwhile by one not set yet has the old slice: it looks again
// until a look finds no thread it has not seen, as timerslack's rename.
func setAll(ns uint64) {
	seen := map[string]bool{}
	for range 4 {
		tasks, err := os.ReadDir("/proc/self/task")
		if err != nil {
			return
		}
		fresh := false
		for _, t := range tasks {
			if seen[t.Name()] {
				continue
			}
			seen[t.Name()], fresh = true, true
			if tid, err := strconv.Atoi(t.Name()); err == nil {
				set(tid, ns)
			}
		}
		if !fresh {
			return
		}
	}
}

// set gives thread tid the slice ns when it runs under a fair policy with
// a longer one; it says whether it did.
func set(tid int, ns uint64) bool {
	a, err := unix.SchedGetAttr(tid, 0)
	if err != nil || a.Runtime == 0 || a.Runtime <= ns {
		return false
	}
	if a.Policy != unix.SCHED_NORMAL && a.Policy != unix.SCHED_BATCH {
		return false
	}
	a.Runtime = ns
	a.Flags &= unix.SCHED_FLAG_RESET_ON_FORK
	return unix.SchedSetAttr(tid, a, 0) == nil
}
