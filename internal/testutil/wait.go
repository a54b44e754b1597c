package testutil

import (
	"testing"
	"time"
)

// Eventually waits until cond returns true, checking every 10 ms, and
// fails the test naming what it waited for when timeout passes first.
// Tests wait on an observable event this way instead of sleeping for a
// guessed time.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
