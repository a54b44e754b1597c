package main

import (
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
)

// heapFloor is the heap below which `holdfast serve` does not collect.
// The daemon's live heap is small (2 MiB with a few thousand queued,
// 5-10 MiB at a million), and the runtime's default (GOGC=100) collects
// when the heap has grown by as much again, at least 4 MiB: an accepted
// message allocates about 70 KB (most of it bbolt's copy of the pages
// its commit changes), so at a few thousand messages a second the
// collector ran every 40 messages. With the floor the heap may grow to
// 12 MiB before a collection; once the live heap is over half of that,
// GOGC=100 applies as before. The cost is at most 8 MiB more heap than
// GOGC=100 alone (docs/benchmarks.md: 16 MiB put the RSS at a million
// queued within 7 MiB of its budget of 64). The memory limit
// (memlimit.go) still bounds a burst of large messages.
const heapFloor = 12 << 20

// gcFloorOnce arms the floor once per process (tests start the daemon
// more than once); gcFloorState is the floor armed.
var (
	gcFloorOnce  sync.Once
	gcFloorState *gcFloor
)

// setGCFloor keeps the heap goal at heapFloor or more, unless the
// operator set GOGC, which then wins, as the runtime's own setting
// always does. After each collection it sets the GC percent that puts
// the next goal at max(heapFloor, twice the live heap). It also starts
// the collector of idle time (idleGC), for the life of the process, and
// has the heap's first pages mapped at once (pretouch).
func setGCFloor(log zerolog.Logger) {
	if os.Getenv("GOGC") != "" {
		return
	}
	gcFloorOnce.Do(func() {
		f := &gcFloor{sample: []metrics.Sample{
			{Name: "/gc/heap/live:bytes"}, {Name: "/gc/scan/stack:bytes"}, {Name: "/gc/scan/globals:bytes"}}}
		f.percent.Store(100)
		gcFloorState = f
		f.arm()
		go idleGC(idleTick, nil)
		pretouch(pretouchBytes)
		log.Debug().Int("bytes", heapFloor).Msg("Go heap floor set")
	})
}

// gcFloor is the GC percent that gives the heap floor; tune runs after
// every collection (arm).
type gcFloor struct {
	percent atomic.Int32
	sample  []metrics.Sample // the live heap, the stacks and globals scanned
}

// gcSentinel is garbage whose finalizer runs after each collection.
type gcSentinel struct{ f *gcFloor }

// arm makes tune run after the next collection.
func (f *gcFloor) arm() {
	runtime.SetFinalizer(&gcSentinel{f}, func(s *gcSentinel) {
		s.f.tune()
		s.f.arm()
	})
}

// tune sets the GC percent for the heap of the last collection.
func (f *gcFloor) tune() {
	var v [3]uint64
	if !readUint64s(f.sample, v[:]) {
		return
	}
	if p := floorPercent(v[0], v[1]+v[2]); p != int(f.percent.Load()) {
		f.percent.Store(int32(p))
		debug.SetGCPercent(p)
	}
}

// floorPercent is the GC percent that puts the heap goal at heapFloor
// after a collection that left live bytes of heap and scanned roots
// bytes of stacks and globals (the runtime's goal is live + (live +
// roots) * GOGC/100), or 100 when that goal is already above the floor.
// It is rounded down to a multiple of 25, so that it changes seldom.
func floorPercent(live, roots uint64) int {
	scanned := live + roots
	if live == 0 || live+scanned >= heapFloor {
		return 100
	}
	p := (heapFloor - live) * 100 / scanned
	return int(min(p, 10000) / 25 * 25)
}

// Collecting in the quiet after a burst. The daemon's work comes in
// bursts: a customer's ETRN flushes its domain, a dial-up client sends
// its mail, then nothing for seconds. A collection that starts inside a
// burst takes CPU from it: on two cores a quarter of the CPU for the
// mark, and stops of up to 2 ms (docs/benchmarks.md: one ETRN round of
// 100 messages in two or three at 10k queued had one). idleGC collects
// once the daemon has been idle for an idleTick and the heap has used
// half its room (from the live heap to the goal) or more, so that the
// next burst starts with the room whole. Under steady load the daemon is
// never idle and the runtime alone decides, as before; an idle daemon
// collects at most once per burst.
const (
	// idleTick is how often idleGC looks, and how long the daemon must
	// have been idle.
	idleTick = 200 * time.Millisecond
	// idleAllocs is the most the daemon may allocate in one idleTick and
	// still count as idle (its timers, a metrics scrape).
	idleAllocs = 256 << 10
)

// idleGC looks every tick until stop is closed (never, with nil).
func idleGC(tick time.Duration, stop <-chan struct{}) {
	s := []metrics.Sample{
		{Name: "/gc/heap/allocs:bytes"},
		{Name: "/gc/heap/goal:bytes"},
		{Name: "/gc/heap/live:bytes"},
		{Name: "/memory/classes/heap/objects:bytes"},
	}
	t := time.NewTicker(tick)
	defer t.Stop()
	var last uint64
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		var v [4]uint64
		if !readUint64s(s, v[:]) {
			return // not on this runtime: leave it to the runtime
		}
		if idleCollect(v[0]-last, v[1], v[2], v[3]) {
			runtime.GC()
		}
		last = v[0]
	}
}

// readUint64s reads the samples into v (as long as s); false when one of
// them is not a uint64 on this runtime.
func readUint64s(s []metrics.Sample, v []uint64) bool {
	metrics.Read(s)
	for i := range s {
		if s[i].Value.Kind() != metrics.KindUint64 {
			return false
		}
		v[i] = s[i].Value.Uint64()
	}
	return true
}

// idleCollect decides for idleGC: the daemon allocated allocs bytes in
// the last tick, the heap holds heap bytes of objects, the live heap of
// the last collection was live and the goal of the next is goal.
func idleCollect(allocs, goal, live, heap uint64) bool {
	return allocs < idleAllocs && goal > live && heap-min(heap, live) >= (goal-live)/2
}

// pretouchBytes is how much of the heap's room pretouch maps at start:
// the room the first bursts of work fill before the first collection
// (the live heap after start is 2-4 MiB, and idleGC collects once half
// of the room up to heapFloor is used).
const pretouchBytes = heapFloor / 2

// pretouch has n bytes of the heap's pages mapped now, at start, rather
// than in the daemon's first bursts of work, as a JVM's AlwaysPreTouch
// does: a fresh page costs a page fault the first time it is written
// (about 4 µs here, the kernel zeroing it), and the first ETRN round
// after a start allocated its 3.5 MiB from such pages (docs/benchmarks.md,
// *Issue 16: the heap's pages mapped at start*). It writes one byte per
// page of an n-byte object and collects it: its pages go back to the
// heap, mapped, and the runtime reuses them for the next spans and
// goroutine stacks. The start-up takes about 1 ms longer per MiB; the
// heap would reach this size in its first bursts anyway (RSS unchanged
// after them).
func pretouch(n int) {
	b := make([]byte, n)
	for i := 0; i < len(b); i += 4096 {
		b[i] = 1
	}
	runtime.KeepAlive(b)
	runtime.GC()
}
