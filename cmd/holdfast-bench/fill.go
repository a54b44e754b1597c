package main

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/holdfast-mta/holdfast/config"
	"github.com/holdfast-mta/holdfast/flush"
	"github.com/holdfast-mta/holdfast/store"
)

// Domain names of the ETRN-at-scale queue. Filler mail is spread round
// robin over Domains ETRN-only domains; each run flushes one "hot" domain
// that holds exactly Batch messages.
func fillerDomain(i int) string { return fmt.Sprintf("d%05d.etrn.test", i) }

func hotDomain(size, run int) string { return fmt.Sprintf("h%d-%d.etrn.test", size, run) }

// hotDomains is the hot domain of each of c.Runs runs at size.
func hotDomains(c *Config, size int) []string {
	hot := make([]string, c.Runs)
	for i := range hot {
		hot[i] = hotDomain(size, i)
	}
	return hot
}

// postfixPlan is the hot domains at size and the fill plan (fillPlan)
// that brings Postfix's queue from have to size messages.
func postfixPlan(c *Config, size, have int) (hot, plan []string) {
	hot = hotDomains(c, size)
	next := have
	return hot, fillPlan(size-have, hot, c.Batch, c.Domains, &next)
}

// retryAfter is when filled mail is next due: later than any run (and
// than a cached queue file's age, see Config.Cache), so the only
// deliveries during a measurement are the ones ETRN starts.
const retryAfter = 24 * time.Hour

// fillPlan lists the recipients' domains of n new messages: the hot
// domains' batches first, then filler mail continuing the round robin at
// *next.
func fillPlan(n int, hot []string, batch, domains int, next *int) []string {
	out := make([]string, 0, n)
	for _, h := range hot {
		for j := 0; j < batch && len(out) < n; j++ {
			out = append(out, h)
		}
	}
	for len(out) < n {
		out = append(out, fillerDomain(*next%domains))
		*next++
	}
	return out
}

// fillStore adds deferred messages for the given domains to holdfast's
// queue file directly through the store API, with the daemon stopped:
// one Enqueue per message, already deferred, exactly as the daemon stores
// mail for an ETRN-only destination; concurrent, so bbolt batches the
// commits. The flush policy comes from the daemon's own configuration
// file, so the daemon finds the index valid and does not rebuild it.
// plan(n) names the recipient domains of the n messages to add. Returns
// the queue's message count and how many were added.
func fillStore(ctx context.Context, cfgPath, dbPath string, size int, plan func(n int) []string) (total, added int, err error) {
	cfg, err := config.Load(cfgPath)
	if err != nil {
		return 0, 0, err
	}
	pol, err := flush.New(cfg)
	if err != nil {
		return 0, 0, err
	}
	s, err := store.Open(dbPath, store.Options{NoSync: true, Eligible: pol.Eligible, PolicyKey: pol.Key(), Timeout: 5 * time.Second})
	if err != nil {
		return 0, 0, err
	}
	defer func() {
		if cerr := s.Close(); err == nil {
			err = cerr
		}
	}()
	have, err := queued(s)
	if err != nil {
		return 0, 0, err
	}
	if have >= size {
		return have, 0, nil
	}

	domains := plan(size - have)
	body := storedBody()
	const chunk = 20000
	for off := 0; off < len(domains); off += chunk {
		if err := ctx.Err(); err != nil {
			return 0, 0, err
		}
		end := min(off+chunk, len(domains))
		if err := fillChunk(s, domains[off:end], body); err != nil {
			return 0, 0, err
		}
	}
	total, err = queued(s)
	return total, len(domains), err
}

func queued(s *store.Store) (int, error) {
	st, err := s.Stats()
	if err != nil {
		return 0, err
	}
	return int(st.Incoming + st.Active + st.Deferred + st.Hold), nil
}

func fillChunk(s *store.Store, domains []string, body []byte) error {
	next := time.Now().Add(retryAfter)
	return parallel(len(domains), func(i int) error {
		return s.Enqueue(deferredMessage("u@"+domains[i], next), body)
	})
}

// parallel runs f(0..n-1) over up to 1000 goroutines (bbolt's batch
// size) and returns the first error.
func parallel(n int, f func(i int) error) error { return parallelN(1000, n, f) }

// deferredMessage is what the daemon enqueues for mail routed to a
// transport in defer_transports: the recipient already deferred once
// ("deferred transport", 4.3.2) and due at its next attempt, so the one
// Enqueue commit stores it deferred and indexed for flush.
func deferredMessage(rcpt string, next time.Time) *store.Message {
	return &store.Message{
		Sender: "bench@source.test",
		Recipients: []store.Recipient{{Addr: rcpt, Attempts: 1, NextAttempt: next,
			Reply: "deferred transport", DSN: "4.3.2"}},
		ClientAddr: "127.0.0.1",
		ClientName: "localhost",
		Helo:       "source.bench.test",
		Protocol:   "ESMTP",
	}
}

// storedBody is what holdfast would store for one smtp-source message:
// a Received: line, smtp-source's headers and 1 KiB of text.
func storedBody() []byte {
	var b strings.Builder
	b.WriteString("Received: from source.bench.test (localhost [127.0.0.1])\r\n\tby hf.bench.test (holdfast) with ESMTP id 0000000000aa\r\n\tfor <u@d00000.etrn.test>; Tue, 24 Nov 2026 22:00:00 +0000\r\n")
	b.WriteString("From: <bench@source.test>\r\nTo: <u@d00000.etrn.test>\r\nDate: Tue, 24 Nov 2026 22:00:00 +0000\r\nMessage-Id: <0000@source.bench.test>\r\n\r\n")
	b.Write(payload[len("From: <bench@source.test>\r\nSubject: holdfast benchmark\r\n\r\n"):])
	return []byte(b.String())
}

// dbFile is the queue file inside holdfast's queue_directory.
func dbFile(queueDir string) string { return filepath.Join(queueDir, "queue.db") }
