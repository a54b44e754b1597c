package main

import (
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
	"sync/atomic"

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
// the next goal at max(heapFloor, twice the live heap).
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
	metrics.Read(f.sample)
	var v [3]uint64
	for i, s := range f.sample {
		if s.Value.Kind() != metrics.KindUint64 {
			return
		}
		v[i] = s.Value.Uint64()
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
