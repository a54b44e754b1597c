package crashtest

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/holdfast-mta/holdfast/store"
)

func TestMain(m *testing.M) { os.Exit(Main(m)) }

// crashPlan is how long the load runs and how often the daemon dies.
type crashPlan struct {
	load    time.Duration // clients keep sending this long
	gap     time.Duration // mean time between kills
	drain   time.Duration // bound for delivering everything afterwards
	clients int
}

// plan is the short form for go test (about 30 s) unless HOLDFAST_SOAK
// gives a duration (make soak: 10m).
func plan(t *testing.T) crashPlan {
	p := crashPlan{load: 12 * time.Second, gap: 2 * time.Second, drain: 30 * time.Second, clients: 20}
	if v := os.Getenv("HOLDFAST_SOAK"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("HOLDFAST_SOAK=%q: %v", v, err)
		}
		p.load, p.gap, p.drain = d, 4*time.Second, 3*time.Minute
	}
	if testing.Short() {
		p.load, p.gap = 8*time.Second, 1500*time.Millisecond
	}
	return p
}

// crashConfig is the daemon configuration of the crash test: everything
// for sink.test and sink2.test goes to the sink; retries are quick so that
// deferred mail drains within the test.
func crashConfig(t testing.TB, sink *Sink, extra map[string]string) *Daemon {
	dir := t.TempDir()
	transport := filepath.Join(dir, "transport")
	body := fmt.Sprintf("sink.test smtp:[127.0.0.1]:%s\nsink2.test smtp:[127.0.0.1]:%s\n", port(sink.Addr), port(sink.Addr))
	if err := os.WriteFile(transport, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	params := map[string]string{
		"mynetworks":           "127.0.0.0/8",
		"relay_domains":        "sink.test, sink2.test",
		"fast_flush_domains":   "$relay_domains",
		"transport_maps":       "texthash:" + transport,
		"minimal_backoff_time": "2s",
		"maximal_backoff_time": "4s",
		"queue_run_delay":      "1s",
		"shutdown_timeout":     "3s",
	}
	for k, v := range extra {
		params[k] = v
	}
	return NewDaemon(t, params)
}

func port(addr string) string {
	return addr[strings.LastIndexByte(addr, ':')+1:]
}

// kill records one SIGKILL.
type kill struct {
	at    time.Time // SIGKILL sent
	spawn time.Time // the next incarnation started (the old one was dead)
	kind  string
}

// TestCrashUnderLoad: 20 clients send while the daemon is SIGKILLed at
// chosen moments (mid-DATA, between final dot and reply, mid-delivery,
// right after an ETRN, at random) or stopped with SIGTERM, and restarted.
// Every message that got 250 must reach the sink; a duplicate is allowed
// only across a kill, never across a graceful stop.
func TestCrashUnderLoad(t *testing.T) {
	p := plan(t)
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv("HOLDFAST_SEED"); v != "" {
		seed, _ = strconv.ParseUint(v, 10, 64)
	}
	t.Logf("seed %d (HOLDFAST_SEED to repeat the choices; timing still varies)", seed)
	rng := rand.New(rand.NewPCG(seed, 0))

	sink, delivering := crashSink(t, seed)
	d := crashConfig(t, sink, nil)
	d.Start()

	load := &Load{D: d, Ledger: newLedger(), Domains: []string{"sink.test", "sink2.test"}, Seed: seed}
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); load.Run(ctx, p.clients) }()
	etrns := &etrnStats{}
	go func() { defer wg.Done(); etrnLoop(ctx, d, etrns, seed) }()

	ks := killLoop(t, p, d, load, delivering, rng)
	kills := ks.kills
	stop()
	wg.Wait()

	acked, unsure, refused, broken := load.Ledger.Snapshot()
	if refused > 0 {
		t.Logf("refusals by reply: %s", replyHistogram(load.Ledger.RefusedSet()))
	}
	t.Logf("load: %d messages sent, %d acked, %d unsure (no reply after the dot), %d refused, %d broken before the dot; %d ETRNs answered, %d flush commands",
		load.Sent.Load(), len(acked), len(unsure), refused, broken, etrns.ok.Load(), etrns.cli.Load())

	drain(t, d, sink, acked, p.drain)
	report := verifyDeliveries(t, sink, acked, unsure, load.Ledger.RefusedSet(), kills, d.Log())
	report.kills, report.checks, report.maxRestart = len(kills), ks.checks, ks.maxRestart
	for _, k := range kills {
		if k.kind == "term" {
			report.terms++
		}
	}
	verifyQueueEmpty(t, d)
	// A graceful stop that ended within shutdown_timeout finished or
	// released its deliveries cleanly: nothing it sent may come again.
	if n := report.dupsByKind["term"]; n > 0 && ks.maxStop < 3*time.Second {
		t.Errorf("%d duplicate deliveries across a graceful stop (SIGTERM, done in %v)", n, ks.maxStop.Round(time.Millisecond))
	}
	t.Logf("kills by kind: %s; duplicates by the kind of the restart between them: %v", killKinds(kills), report.dupsByKind)
	t.Logf("kills at %s", killTimes(kills))
	if ks.checkSkipped {
		t.Logf("holdfast db check is not available: the database was not checked between kills")
	}
	t.Logf("RESULT crashtest: stops=%d (SIGKILL %d, SIGTERM %d, slowest SIGTERM %v) db-checks=%d acked=%d delivered-acked=%d unsure=%d unsure-delivered=%d duplicates=%d (late-read %d) lost=%d max-restart=%v journal-replayed=%d",
		report.kills, report.kills-report.terms, report.terms, ks.maxStop.Round(time.Millisecond), report.checks, len(acked), report.deliveredAcked, len(unsure), report.unsureDelivered, report.duplicates, report.lateReads, report.lost, report.maxRestart.Round(time.Millisecond), journalReplayed(d.Log()))
	for i, seq := range report.unexplained {
		if i == 3 {
			break
		}
		load.Ledger.mu.Lock()
		qid := load.Ledger.QueueID[seq]
		load.Ledger.mu.Unlock()
		t.Logf("daemon log for %s (queue id %s):\n%s", seq, qid, grepLog(d.Log(), qid))
	}
	if t.Failed() && len(report.unexplained) == 0 {
		t.Logf("daemon log tail:\n%s", d.LogTail(60))
	}
}

// crashSink is the crash test's customer MTA. One message in five is
// refused once with 451, so that there is deferred mail for the ETRNs to
// find; deliveries take 0-20 ms so that kills land inside them. The
// channel gets a signal whenever a message has been read.
func crashSink(t *testing.T, seed uint64) (*Sink, chan struct{}) {
	sink := NewSink(t)
	sink.SetTempFail(func(seq string, attempt int) *smtp.SMTPError {
		if attempt == 1 && hash(seq)%5 == 0 {
			return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "try again later"}
		}
		return nil
	})
	var delayMu sync.Mutex
	drng := rand.New(rand.NewPCG(seed, 1))
	sink.SetDelay(func() time.Duration {
		delayMu.Lock()
		defer delayMu.Unlock()
		return time.Duration(drng.IntN(20)) * time.Millisecond
	})
	delivering := make(chan struct{}, 1)
	sink.OnData(func(string) {
		select {
		case delivering <- struct{}{}:
		default:
		}
	})
	return sink, delivering
}

// killStats is what killLoop did.
type killStats struct {
	kills               []kill
	checks              int
	checkSkipped        bool
	maxRestart, maxStop time.Duration
}

// killLoop stops the daemon every p.gap on average, in turn at each kind
// of moment, until p.load has passed and every kind has had its turn, and
// restarts it each time.
func killLoop(t *testing.T, p crashPlan, d *Daemon, load *Load, delivering chan struct{}, rng *rand.Rand) killStats {
	var ks killStats
	// "term" is a graceful stop (SIGTERM) under full load, the others
	// SIGKILL at a chosen moment.
	kinds := []string{"data", "commit", "delivery", "term", "flush", "random"}
	start := time.Now()
	for i := 0; time.Since(start) < p.load || len(ks.kills) < len(kinds); i++ {
		time.Sleep(p.gap/2 + time.Duration(rng.Int64N(int64(p.gap))))
		kind := kinds[i%len(kinds)]
		armKill(kind, d, load, delivering, rng)
		k := kill{at: time.Now(), kind: kind}
		if kind == "term" {
			if err := d.Stop(); err != nil {
				t.Errorf("graceful stop under load: %v\n%s", err, d.LogTail(20))
			}
			ks.maxStop = max(ks.maxStop, time.Since(k.at))
		} else {
			d.Kill()
		}
		// db check opens the file read-write, so it also returns the
		// dead daemon's leases to the queue: every other kill leaves that
		// recovery to the restarted daemon instead.
		if !ks.checkSkipped && i%2 == 0 {
			switch dbCheck(t, d) {
			case "ok":
				ks.checks++
			case "absent":
				ks.checkSkipped = true
			}
		}
		// At least 50 ms down: what the dead process had already written
		// to its sockets reaches the sink before the next one starts.
		time.Sleep(time.Duration(50+rng.IntN(200)) * time.Millisecond)
		k.spawn = time.Now()
		ks.kills = append(ks.kills, k)
		d.Start()
		ks.maxRestart = max(ks.maxRestart, time.Since(k.spawn))
	}
	return ks
}

// drain lets the sink take everything, hurries deferred mail with ETRN
// until every acked message arrived (at most limit), waits for stragglers
// and stops the daemon, which must exit 0.
func drain(t *testing.T, d *Daemon, sink *Sink, acked map[string][]string, limit time.Duration) {
	sink.SetTempFail(nil)
	missing := func() int {
		n := 0
		for seq, rcpts := range acked {
			for _, r := range rcpts {
				if sink.Count(seq, r) == 0 {
					n++
				}
			}
		}
		return n
	}
	deadline := time.Now().Add(limit)
	for missing() > 0 && time.Now().Before(deadline) {
		etrnOnce(d, "sink.test")
		etrnOnce(d, "sink2.test")
		sink.WaitFor(time.Second, func() bool { return missing() == 0 })
	}
	settle(sink, 1500*time.Millisecond, 10*time.Second)
	if err := d.Stop(); err != nil {
		t.Errorf("graceful stop after the drain: %v\n%s", err, d.LogTail(20))
	}
}

// grepLog returns the log lines that mention s, and the start markers.
func grepLog(log, s string) string {
	if s == "" {
		return "(no queue id)"
	}
	var out []string
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(l, s) || strings.HasPrefix(l, "=== start") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// replyHistogram counts refusals by reply code and enhanced code.
func replyHistogram(refused map[string]string) string {
	n := map[string]int{}
	for _, r := range refused {
		if len(r) > 60 {
			r = r[:60]
		}
		n[r]++
	}
	var parts []string
	for k, v := range n {
		parts = append(parts, fmt.Sprintf("%d x %q", v, k))
	}
	sort.Strings(parts)
	return strings.Join(parts, ", ")
}

func killTimes(kills []kill) string {
	var parts []string
	for _, k := range kills {
		parts = append(parts, k.at.Format("15:04:05.000")+" "+k.kind+" (restart "+k.spawn.Format("05.000")+")")
	}
	return strings.Join(parts, ", ")
}

func killKinds(kills []kill) string {
	n := map[string]int{}
	for _, k := range kills {
		n[k.kind]++
	}
	var parts []string
	for k, v := range n {
		parts = append(parts, fmt.Sprintf("%s=%d", k, v))
	}
	sort.Strings(parts)
	return strings.Join(parts, " ")
}

// armKill waits (at most 3 s) for the moment a kill of this kind should
// hit, and returns then.
func armKill(kind string, d *Daemon, g *Load, delivering chan struct{}, rng *rand.Rand) {
	deadline := time.Now().Add(3 * time.Second)
	switch kind {
	case "data":
		for g.InBody.Load() == 0 && time.Now().Before(deadline) {
			time.Sleep(200 * time.Microsecond)
		}
	case "commit":
		for g.InCommit.Load() == 0 && time.Now().Before(deadline) {
			time.Sleep(100 * time.Microsecond)
		}
	case "delivery":
		select {
		case <-delivering: // drop a stale signal
		default:
		}
		select {
		case <-delivering:
		case <-time.After(time.Until(deadline)):
		}
	case "flush":
		s, code, _, err := Dial(d.Addr(), "", 2*time.Second)
		if err != nil || code != 220 {
			return
		}
		defer s.Close()
		s.Cmd("EHLO client.test")
		s.TP.PrintfLine("ETRN sink.test")
		time.Sleep(time.Duration(rng.IntN(3000)) * time.Microsecond)
	}
}

// dbCheck runs `holdfast db check` on the killed daemon's queue: "ok",
// "absent" when the binary has no such command, "failed" (test error).
func dbCheck(t *testing.T, d *Daemon) string {
	out, errOut, code := d.Command(time.Minute, "db", "check")
	if code == 0 {
		return "ok"
	}
	if strings.Contains(errOut, "unknown command") || strings.Contains(errOut, "usage:") && code == 64 {
		return "absent"
	}
	t.Errorf("holdfast db check after a kill: exit %d\n%s%s", code, out, errOut)
	return "failed"
}

type etrnStats struct {
	ok, cli atomic.Int64
}

// etrnLoop sends ETRN for one of the sink domains every 150-450 ms, and
// every few seconds asks the CLI for a flush of everything, until ctx is
// done. Failures are expected while the daemon is down.
func etrnLoop(ctx context.Context, d *Daemon, st *etrnStats, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 99))
	domains := []string{"sink.test", "sink2.test"}
	for i := 0; ctx.Err() == nil; i++ {
		sleepCtx(ctx, time.Duration(150+rng.IntN(300))*time.Millisecond)
		if etrnOnce(d, domains[i%2]) {
			st.ok.Add(1)
		}
		if i%10 == 9 {
			if _, _, code := d.Command(10*time.Second, "flush", "--all"); code == 0 {
				st.cli.Add(1)
			}
		}
	}
}

// etrnOnce sends one ETRN and reports whether it got a 2xx reply.
func etrnOnce(d *Daemon, domain string) bool {
	s, code, _, err := Dial(d.Addr(), "", 5*time.Second)
	if err != nil || code != 220 {
		if s != nil {
			s.Close()
		}
		return false
	}
	defer s.Close()
	if code, _, _ := s.Cmd("EHLO client.test"); code != 250 {
		return false
	}
	code, _, _ = s.Cmd("ETRN %s", domain)
	s.Cmd("QUIT")
	return code/100 == 2
}

// settle waits until the sink has seen no new delivery for quiet (at most
// limit), so that mail acknowledged without a reply to the client also
// arrives before the queue is inspected.
func settle(s *Sink, quiet, limit time.Duration) {
	end := time.Now().Add(limit)
	last, since := s.Total(), time.Now()
	for time.Now().Before(end) {
		time.Sleep(100 * time.Millisecond)
		if n := s.Total(); n != last {
			last, since = n, time.Now()
		} else if time.Since(since) >= quiet {
			return
		}
	}
}

type crashReport struct {
	kills, checks   int
	terms           int // graceful stops among kills
	deliveredAcked  int
	unsureDelivered int
	duplicates      int
	lost            int
	maxRestart      time.Duration
	unexplained     []string // seqs duplicated without a restart
	lateReads       int      // duplicates whose timing was unclear but the log shows two processes
	dupsByKind      map[string]int
}

// verifyDeliveries checks the sink against the ledger: nothing acked is
// missing, nothing unknown arrived, and every duplicate has a restart
// between its two deliveries: the first by a process that was then
// killed before it recorded the success, the second by its successor.
func verifyDeliveries(t *testing.T, sink *Sink, acked, unsure map[string][]string, refusedSet map[string]string, kills []kill, log string) crashReport {
	r := crashReport{dupsByKind: map[string]int{}}
	sent := sentByProcess(log)
	known := map[string]bool{}
	for seq, rcpts := range acked {
		for _, rc := range rcpts {
			known[seq+" "+rc] = true
			if sink.Count(seq, rc) == 0 {
				r.lost++
				if r.lost <= 20 {
					t.Errorf("LOST: %s to %s got 250 after DATA but never reached the sink", seq, rc)
				}
			} else {
				r.deliveredAcked++
			}
		}
	}
	for seq, rcpts := range unsure {
		for _, rc := range rcpts {
			known[seq+" "+rc] = true
			if sink.Count(seq, rc) > 0 {
				r.unsureDelivered++
			}
		}
	}
	if r.lost > 0 {
		t.Errorf("%d acknowledged deliveries lost", r.lost)
	}
	bad := 0
	var unexplained []string
	for _, k := range sink.Keys() {
		seq, rc, _ := strings.Cut(k, " ")
		if !known[k] {
			// A message refused after DATA, or whose connection broke
			// before the dot, must not arrive; nor anything never sent.
			bad++
			if bad <= 10 {
				t.Errorf("sink got %s for %s, which the client saw %s", seq, rc, fate(refusedSet, seq))
			}
			continue
		}
		dl := sink.Deliveries(seq, rc)
		for i := 1; i < len(dl); i++ {
			r.duplicates++
			if dl[i].QueueID != dl[i-1].QueueID {
				unexplained = append(unexplained, seq)
				t.Errorf("%s to %s queued twice: delivered as %s and as %s", seq, rc, dl[i-1].QueueID, dl[i].QueueID)
				continue
			}
			if k := killBetween(kills, dl[i-1].At, dl[i].At); k != "" {
				r.dupsByKind[k]++
				continue
			}
			// The sink's clock can lag (a starved test process reads a
			// dead daemon's last bytes late): ask the daemon's log which
			// process reported the delivery. One process reporting it
			// twice is a real duplicate; a killed one never reports.
			if n := maxPerProcess(sent[dl[i].QueueID+" "+rc]); n >= 2 {
				unexplained = append(unexplained, seq)
				t.Errorf("DUPLICATE: %s (queue id %s) to %s delivered at %s and %s, reported sent %d times by one process",
					seq, dl[i].QueueID, rc, dl[i-1].At.Format("15:04:05.000"), dl[i].At.Format("15:04:05.000"), n)
			} else {
				r.lateReads++
			}
		}
	}
	r.unexplained = unexplained
	return r
}

func fate(refused map[string]string, seq string) string {
	if why, ok := refused[seq]; ok {
		return "refused: " + why
	}
	return "broken before the final dot, or never sent"
}

// sentByProcess reads the daemon's JSON log: for each "queue_id to" that
// was reported sent, the numbers of the processes (starts) that said so.
func sentByProcess(log string) map[string][]int {
	out := map[string][]int{}
	proc := 0
	for _, l := range strings.Split(log, "\n") {
		if strings.HasPrefix(l, "=== start") {
			proc++
			continue
		}
		if !strings.Contains(l, `"status":"sent"`) {
			continue
		}
		var e struct {
			QueueID string `json:"queue_id"`
			To      string `json:"to"`
		}
		if json.Unmarshal([]byte(l), &e) == nil && e.QueueID != "" {
			out[e.QueueID+" "+e.To] = append(out[e.QueueID+" "+e.To], proc)
		}
	}
	return out
}

// maxPerProcess is the largest number of times one process appears.
func maxPerProcess(procs []int) int {
	n := map[int]int{}
	m := 0
	for _, p := range procs {
		n[p]++
		m = max(m, n[p])
	}
	return m
}

// killBetween returns the kind of the first restart between a and b, ""
// when there is none.
func killBetween(kills []kill, a, b time.Time) string {
	for _, k := range kills {
		if !k.spawn.Before(a) && !k.spawn.After(b) {
			return k.kind
		}
	}
	return ""
}

// verifyQueueEmpty opens the stopped daemon's queue: it must pass Check and
// hold nothing (everything was delivered).
func verifyQueueEmpty(t *testing.T, d *Daemon) {
	s, err := store.Open(d.QueueDB(), store.Options{Timeout: 5 * time.Second})
	if err != nil {
		t.Errorf("open queue after the run: %v", err)
		return
	}
	defer s.Close()
	if err := s.Check(); err != nil {
		t.Errorf("queue check after the run: %v", err)
	}
	msgs, _, err := s.List(store.Filter{}, "", 50)
	if err != nil {
		t.Errorf("list queue: %v", err)
		return
	}
	for _, m := range msgs {
		var rc []string
		for _, r := range m.Recipients {
			rc = append(rc, fmt.Sprintf("%s(%d %s)", r.Addr, r.State, r.Reply))
		}
		t.Errorf("left in the queue after the drain: %s state %s from <%s> to %s", m.ID, m.State, m.Sender, strings.Join(rc, ", "))
	}
}

func hash(s string) uint32 {
	h := uint32(2166136261)
	for i := 0; i < len(s); i++ {
		h ^= uint32(s[i])
		h *= 16777619
	}
	return h
}

// replayedField is the count of journal records a start filed in
// queue.db (the "queue opened" log line).
var replayedField = regexp.MustCompile(`"journal_replayed":(\d+)`)

// journalReplayed sums it over the starts in log: messages acknowledged
// through the journal that a kill left unfiled (all must be delivered,
// as any acknowledged message).
func journalReplayed(log string) int {
	n := 0
	for _, m := range replayedField.FindAllStringSubmatch(log, -1) {
		v, _ := strconv.Atoi(m[1])
		n += v
	}
	return n
}
