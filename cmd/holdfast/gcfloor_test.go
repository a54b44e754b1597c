package main

import (
	"runtime"
	"runtime/debug"
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
