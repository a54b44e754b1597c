package main

import (
	"strings"
	"testing"
	"time"

	"github.com/holdfast-mta/holdfast/cluster"
)

// The cluster views print every node's share and the totals.
func TestClusterViews(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	sums := []cluster.Summary{
		{Node: "a", Time: now.Add(-2 * time.Second), Dests: map[string]int{"customer.tld": 100, "other.tld": 1}},
		{Node: "b", Time: now.Add(-time.Second), Dests: map[string]int{"customer.tld": 50}},
	}
	var b strings.Builder
	writeClusterStats(&b, sums, now)
	if got, want := fields(b.String()), "NODE DESTINATIONS MESSAGES AS OF|a 2 101 2s ago|b 1 50 1s ago|TOTAL 151"; got != want {
		t.Errorf("stats: %q, want %q", got, want)
	}
	b.Reset()
	writeClusterShape(&b, sums)
	if got, want := fields(b.String()), "DESTINATION T a b|customer.tld 150 100 50|other.tld 1 1 0"; got != want {
		t.Errorf("shape: %q, want %q", got, want)
	}
	b.Reset()
	writeClusterStatus(&b, cluster.Status{Cluster: "mx", Node: "a", Since: now, Error: "etcd down"}, now)
	if !strings.Contains(b.String(), "etcd unreachable, serving as a single host") || !strings.Contains(b.String(), "last error: etcd down") {
		t.Errorf("status:\n%s", b.String())
	}
}

// fields joins each line's words with one space and the lines with "|".
func fields(s string) string {
	var out []string
	for _, l := range strings.Split(strings.TrimSpace(s), "\n") {
		out = append(out, strings.Join(strings.Fields(l), " "))
	}
	return strings.Join(out, "|")
}
