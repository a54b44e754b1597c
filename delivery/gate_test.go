package delivery

import (
	"sync"
	"testing"
	"time"

	"github.com/holdfast-mta/holdfast/internal/testutil"
)

// TestFinishGate: the attempts that end while others are delivering wait
// for the last of them, and go together with it; gateBatch waiting ones
// go at once; a lone attempt never waits; and held ones go after
// gateHold when the others are still delivering.
func TestFinishGate(t *testing.T) {
	g := finishGate{hold: time.Hour} // no timer fires unless the test says so
	g.enter()
	g.wait() // alone: returns at once

	for range 3 {
		g.enter()
	}
	var mu sync.Mutex
	var order []string
	var wg sync.WaitGroup
	for _, name := range []string{"a", "b"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			g.wait()
			mu.Lock()
			order = append(order, name)
			mu.Unlock()
		}()
	}
	waitHeld(t, &g, 2)
	mu.Lock()
	if len(order) != 0 {
		t.Fatalf("%v went before the last attempt ended", order)
	}
	mu.Unlock()
	g.wait() // the last one: all go
	wg.Wait()

	// Held until the timer fires while another attempt is still
	// delivering.
	g.hold = 20 * time.Millisecond
	g.enter()
	g.enter()
	start := time.Now()
	g.wait()
	if d := time.Since(start); d < g.hold {
		t.Errorf("held %v with another attempt delivering, want at least %v", d, g.hold)
	}
	g.wait()
	g.hold = time.Hour

	// gateBatch attempts held: they go without waiting for the rest.
	for range gateBatch + 1 {
		g.enter()
	}
	for range gateBatch - 1 {
		wg.Add(1)
		go func() { defer wg.Done(); g.wait() }()
	}
	waitHeld(t, &g, gateBatch-1)
	g.wait()
	wg.Wait()
	g.wait()
	if g.busy != 0 || g.held != 0 || g.batch != nil {
		t.Errorf("gate left busy %d, held %d, batch %v", g.busy, g.held, g.batch != nil)
	}
}

// waitHeld waits until n attempts wait on g.
func waitHeld(t *testing.T, g *finishGate, n int) {
	t.Helper()
	if !testutil.WaitFor(10*time.Second, func() bool {
		g.mu.Lock()
		defer g.mu.Unlock()
		return g.held == n
	}) {
		t.Fatalf("%d attempts held, want %d", g.held, n)
	}
}
