package main

import (
	"bytes"
	"strings"
	"testing"
)

// TestTargets checks the goals against a table: met, missed, and
// left out when the run did not measure the figure.
func TestTargets(t *testing.T) {
	r := &Results{}
	put := func(key string, holdfast, postfix float64) {
		r.add(key, key, "x", false, "holdfast", holdfast)
		r.add(key, key, "x", false, "postfix", postfix)
	}
	put("accept/1", 300, 180)       // 1.67×: met
	put("accept/10", 1500, 400)     // 3.75×: missed
	put("relay", 2000, 480)         // 4.17×: met
	put("etrn-reply/10000", 0.4, 2) // 0.2× and 0.4 ms: met
	put("etrn-deliver/10000", 12, 100)
	put("etrn-deliver/1000000", 15, 170)
	r.add("rss/1000000", "rss", "MiB", true, "holdfast", 40)
	var b bytes.Buffer
	r.Write(&b, true)
	out := b.String()
	for _, want := range []string{
		"- acceptance at 1 session ≥ 1.5× Postfix: 1.67× — met",
		"- acceptance at 10 sessions ≥ 4× Postfix: 3.75× — MISSED",
		"- relay end to end ≥ 4× Postfix: 4.17× — met",
		"- ETRN reply at 10k queued ≤ ⅓ of Postfix's: 0.20× Postfix's — met",
		"- ETRN reply at 10k queued ≤ 0.5 ms: 0.40 ms — met",
		"- ETRN → 100 delivered at 10k queued ≤ 10 ms: 12.0 ms — MISSED",
		"- ETRN → 100 delivered flat: 1M/10k ≤ 1.5: 1.25 — met",
		"- RSS at 1M queued ≤ 64 MiB: 40 MiB — met",
	} {
		if !strings.Contains(out, want+"\n") {
			t.Errorf("missing %q in\n%s", want, out)
		}
	}
	if strings.Contains(out, "acceptance at 50 sessions") || strings.Contains(out, "start-up at") {
		t.Errorf("a figure the run did not measure has a target line:\n%s", out)
	}
}
