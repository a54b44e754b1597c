package main

import (
	"context"
	"testing"
	"time"
)

// TestCounterReached: a wait for a count returns the moment the count got
// there (not a later look at it), at once when it is there already, and
// not before.
func TestCounterReached(t *testing.T) {
	s := &goSink{}
	c := &s.counter
	c.add(2)
	select {
	case <-c.Reached(2):
	default:
		t.Fatal("Reached(2) with a count of 2 did not answer at once")
	}
	ch := c.Reached(5)
	c.set(4)
	select {
	case <-ch:
		t.Fatal("Reached(5) answered at a count of 4")
	default:
	}
	before := time.Now()
	c.add(1)
	after := time.Now()
	at := <-ch
	if at.Before(before) || at.After(after) {
		t.Errorf("Reached(5) reported %v, want the moment of the count, between %v and %v", at, before, after)
	}
	if got, err := waitCount(context.Background(), s, 5, time.Second); err != nil || got.IsZero() {
		t.Errorf("waitCount of a count reached: %v, %v", got, err)
	}
	if _, err := waitCount(context.Background(), s, 6, 10*time.Millisecond); err == nil {
		t.Error("waitCount of a count never reached returned no error")
	}
}

// TestSleepUntil: the wait between a system's ETRN runs (-etrn-gap) ends
// at once for a time passed, at the time asked for otherwise, and early
// only when the context ends.
func TestSleepUntil(t *testing.T) {
	ctx := context.Background()
	if err := sleepUntil(ctx, time.Time{}); err != nil {
		t.Fatalf("zero time: %v", err)
	}
	start := time.Now()
	if err := sleepUntil(ctx, start.Add(30*time.Millisecond)); err != nil || time.Since(start) < 30*time.Millisecond {
		t.Fatalf("woke after %s: %v", time.Since(start), err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := sleepUntil(cctx, time.Now().Add(time.Hour)); err != context.Canceled {
		t.Fatalf("cancelled: %v", err)
	}
}
