package main

import (
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

func TestFloorPercent(t *testing.T) {
	for _, c := range []struct {
		live, roots uint64
		want        int
	}{
		{0, 0, 100},                   // before the first collection
		{2 << 20, 0, 500},             // 2 MiB live: goal 2 + 2*5 = 12 MiB
		{2 << 20, 1 << 20, 325},       // roots count in the goal: 2 + 3*3.25 = 11.75 MiB
		{5 << 20, 0, 125},             // 140, rounded down to a multiple of 25
		{6 << 20, 0, 100},             // twice the live heap is the floor
		{10 << 20, 1 << 20, 100},      // GOGC=100 as before
		{1 << 10, 0, 10000},           // capped
		{heapFloor / 2, 1 << 10, 100}, // just above the floor
	} {
		if got := floorPercent(c.live, c.roots); got != c.want {
			t.Errorf("floorPercent(%d, %d) = %d, want %d", c.live, c.roots, got, c.want)
		}
		if p := floorPercent(c.live, c.roots); p > 100 {
			if goal := c.live + (c.live+c.roots)*uint64(p)/100; goal > heapFloor {
				t.Errorf("floorPercent(%d, %d) = %d: goal %d over the floor", c.live, c.roots, p, goal)
			}
		}
	}
}

// TestGCFloor: after a collection the floor sets the GC percent for the
// live heap (this test binary's heap is far below the floor).
func TestGCFloor(t *testing.T) {
	t.Setenv("GOGC", "") // the floor is armed only without GOGC
	setGCFloor(zerolog.Nop())
	deadline := time.Now().Add(10 * time.Second)
	for gcFloorState.percent.Load() == 100 {
		if time.Now().After(deadline) {
			t.Fatal("the GC percent was not tuned after collections")
		}
		runtime.GC()
		time.Sleep(10 * time.Millisecond) // the finalizer runs on its own goroutine
	}
	p := int(gcFloorState.percent.Load())
	if old := debug.SetGCPercent(p); old != p {
		t.Fatalf("GC percent %d, the floor set %d", old, p)
	}
}

func TestIdleCollect(t *testing.T) {
	const mib = 1 << 20
	for _, c := range []struct {
		allocs, goal, live, heap uint64
		want                     bool
	}{
		{0, 12 * mib, 3 * mib, 8 * mib, true},               // idle, over half the room used
		{0, 12 * mib, 3 * mib, 7*mib + mib/2, true},         // exactly half
		{0, 12 * mib, 3 * mib, 7 * mib, false},              // under half: not worth a cycle
		{idleAllocs, 12 * mib, 3 * mib, 11 * mib, false},    // busy: the runtime decides
		{idleAllocs - 1, 12 * mib, 3 * mib, 11 * mib, true}, // the trickle of an idle daemon
		{0, 12 * mib, 3 * mib, 2 * mib, false},              // swept below the live heap
		{0, 3 * mib, 3 * mib, 3 * mib, false},               // no room (a limit reached)
		{0, 64 * mib, 30 * mib, 47 * mib, true},             // a million queued
	} {
		if got := idleCollect(c.allocs, c.goal, c.live, c.heap); got != c.want {
			t.Errorf("idleCollect(%d, %d, %d, %d) = %v, want %v", c.allocs, c.goal, c.live, c.heap, got, c.want)
		}
	}
}

// TestIdleGC: after a burst of garbage that uses more than half the
// heap's room, an idle process is collected within a few ticks.
func TestIdleGC(t *testing.T) {
	runtime.GC()
	stop := make(chan struct{})
	defer close(stop)
	go idleGC(5*time.Millisecond, stop)

	s := []metrics.Sample{{Name: "/gc/cycles/forced:gc-cycles"}, {Name: "/gc/heap/goal:bytes"}, {Name: "/gc/heap/live:bytes"}}
	metrics.Read(s)
	forced := s[0].Value.Uint64()
	room := s[1].Value.Uint64() - s[2].Value.Uint64()
	garbage(room * 3 / 5)
	deadline := time.Now().Add(5 * time.Second)
	for {
		metrics.Read(s)
		if s[0].Value.Uint64() > forced {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no collection after 5 s idle with %d of %d bytes of room used", room*3/5, room)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// garbageSink keeps the compiler from dropping garbage's allocations.
var garbageSink []byte

// garbage allocates about n bytes that are garbage at once.
func garbage(n uint64) {
	for i := uint64(0); i < n; i += 64 << 10 {
		garbageSink = make([]byte, 64<<10)
	}
	garbageSink = nil
}

// TestPretouch: pretouch writes its object and collects it.
func TestPretouch(t *testing.T) {
	s := []metrics.Sample{{Name: "/gc/heap/allocs:bytes"}, {Name: "/gc/cycles/forced:gc-cycles"}}
	metrics.Read(s)
	allocs, forced := s[0].Value.Uint64(), s[1].Value.Uint64()
	pretouch(1 << 20)
	metrics.Read(s)
	if got := s[0].Value.Uint64() - allocs; got < 1<<20 {
		t.Errorf("allocated %d bytes, want 1 MiB or more", got)
	}
	if s[1].Value.Uint64() == forced {
		t.Error("no collection after pretouch")
	}
}
