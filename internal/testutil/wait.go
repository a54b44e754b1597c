package testutil

import (
	"testing"
	"time"
)

// WaitFor waits until cond returns true, checking every 5 ms, and
// reports whether it did before timeout passed. Tests wait on an
// observable event this way instead of sleeping for a guessed time; a
// test that must say more than Eventually's message when the event never
// comes (a log, the state it saw) uses WaitFor and fails itself.
func WaitFor(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
	return true
}

// Eventually waits until cond returns true and fails the test naming
// what it waited for when timeout passes first.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	if !WaitFor(timeout, cond) {
		t.Fatalf("timed out after %v waiting for %s", timeout, what)
	}
}
