package main

import (
	"strings"
	"testing"
	"time"

	"github.com/holdfast-mta/holdfast/cluster"
	"github.com/holdfast-mta/holdfast/follow"
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

// flush --cluster --wait: a node still pending and a member without a
// report make it EX_TEMPFAIL; an error is shown on its node's line.
func TestClusterFlushReport(t *testing.T) {
	ws := cluster.WaitStatus{Members: []string{"a", "b", "c"}, Results: []cluster.Progress{
		{Node: "a", Status: follow.Status{Messages: 2, Delivered: 1, Bounced: 1, End: true}},
		{Node: "b", Status: follow.Status{Messages: 3, Delivered: 1, Deferred: 1, Pending: 1, TimedOut: true, End: true}},
	}}
	var out, errOut strings.Builder
	if rc := clusterFlushReport("customer.tld", ws, time.Minute, &out, &errOut); rc != exTempFail {
		t.Errorf("exit %d", rc)
	}
	want := "a: customer.tld: 2 messages queued, delivered: 1, deferred again: 0, bounced: 1\n" +
		"b: customer.tld: 3 messages queued, delivered: 1, deferred again: 1, bounced: 0, still pending: 1\n" +
		"c: customer.tld: no report\n" +
		"total (2 nodes): 5 messages queued, delivered: 2, deferred again: 1, bounced: 1\n"
	if out.String() != want {
		t.Errorf("report:\n%s\nwant:\n%s", out.String(), want)
	}
	if clusterFlushDone(ws) {
		t.Error("done with c unreported")
	}
	ws.Members = ws.Members[:2]
	if !clusterFlushDone(ws) {
		t.Error("not done when every member has ended")
	}
	out.Reset()
	ws.Results = []cluster.Progress{{Node: "a", Status: follow.Status{Error: "not eligible", End: true}}}
	if rc := clusterFlushReport("x.tld", ws, time.Minute, &out, &errOut); rc != exTempFail || !strings.Contains(out.String(), "error: not eligible") {
		t.Errorf("exit %d:\n%s", rc, out.String())
	}
}
