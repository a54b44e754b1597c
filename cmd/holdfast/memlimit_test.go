package main

import "testing"

func TestMemoryLimit(t *testing.T) {
	for inflight, want := range map[int64]int64{
		64 << 20: 192 << 20, // the default: README's 192 MiB
		0:        0,         // no content budget: no limit
		-1:       0,
		1 << 30:  2560<<20 + 32<<20,
	} {
		if got := memoryLimit(inflight); got != want {
			t.Errorf("memoryLimit(%d) = %d, want %d", inflight, got, want)
		}
	}
}
