package main

import (
	"bytes"
	"context"
	"fmt"
	"go/build"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/holdfast-mta/holdfast/config"
	"github.com/holdfast-mta/holdfast/flush"
	"github.com/holdfast-mta/holdfast/store"
)

var (
	buildOnce sync.Once
	built     string
	buildErr  error
)

// buildHoldfast compiles the daemon once for the smoke tests.
func buildHoldfast(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		goBin, err := exec.LookPath("go")
		if err != nil {
			goBin = filepath.Join(build.Default.GOROOT, "bin", "go")
		}
		dir, err := os.MkdirTemp("", "bench-test-")
		if err != nil {
			buildErr = err
			return
		}
		built = filepath.Join(dir, "holdfast")
		if out, err := exec.Command(goBin, "build", "-o", built, "../holdfast").CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build holdfast: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return built
}

func TestMain(m *testing.M) {
	code := m.Run()
	if built != "" {
		os.RemoveAll(filepath.Dir(built))
	}
	os.Exit(code)
}

// tiny is a harness run small enough for go test.
func tiny(t *testing.T, bin string) *Config {
	var log bytes.Buffer
	t.Cleanup(func() {
		if t.Failed() || testing.Verbose() {
			t.Logf("harness log:\n%s", log.String())
		}
	})
	return &Config{
		Holdfast: bin, Load: "go", Sink: "go", Runs: 2,
		Sessions: []int{1, 3}, AcceptMsgs: 20,
		RelayMsgs: 20, RelaySessions: 2,
		Sizes: []int{40, 80}, Domains: 7, Batch: 10, StartupRuns: 2,
		Skip: map[string]bool{}, Work: t.TempDir(), Log: &log, Table: &log,
	}
}

// TestSmoke runs every holdfast phase of make bench at tiny sizes with
// the built-in Go client and sink, so the harness cannot rot unnoticed.
func TestSmoke(t *testing.T) {
	bin := buildHoldfast(t)
	c := tiny(t, bin)
	c.Cache = t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	r, err := Run(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"accept/1", "accept/3", "fsync", "perfsync/3", "relay",
		"etrn-reply/40", "etrn-deliver/40", "etrn-deliver/80", "startup/80", "rss/80", "disk/80"} {
		f := r.get(key)
		if f == nil || len(f.Runs["holdfast"]) == 0 {
			t.Errorf("figure %s missing", key)
			continue
		}
		for _, v := range f.Runs["holdfast"] {
			if !(v > 0) {
				t.Errorf("figure %s: sample %v, want > 0", key, v)
			}
		}
	}
	if n := len(r.get("etrn-deliver/40").Runs["holdfast"]); n != c.Runs {
		t.Errorf("ETRN runs at 40: %d, want %d", n, c.Runs)
	}
	var table bytes.Buffer
	r.Write(&table, false)
	if !strings.Contains(table.String(), "ETRN: all 10 of the domain at the sink, 80 queued") {
		t.Errorf("table lacks the ETRN line:\n%s", table.String())
	}
	if data, _, batch := chartData(r); data == "" || batch != 10 {
		t.Errorf("chart data %q, batch %d", data, batch)
	}

	// Again from the cached queue files.
	c2 := tiny(t, bin)
	c2.Cache, c2.Skip["accept"], c2.Skip["relay"] = c.Cache, true, true
	r2, err := Run(ctx, c2)
	if err != nil {
		t.Fatal(err)
	}
	if f := r2.get("etrn-deliver/80"); f == nil || len(f.Runs["holdfast"]) != c2.Runs {
		t.Errorf("ETRN from the cached queue: %+v", f)
	}
}

// TestSmokeSMTPSource runs acceptance and relay with Postfix's own tools,
// when they are installed.
func TestSmokeSMTPSource(t *testing.T) {
	for _, p := range []string{"smtp-source", "smtp-sink"} {
		if _, err := exec.LookPath(p); err != nil {
			t.Skipf("%s not installed (Debian package postfix); TestSmoke covers the harness with the Go client", p)
		}
	}
	bin := buildHoldfast(t)
	c := tiny(t, bin)
	c.Load, c.Sink = "smtp-source", "smtp-sink"
	c.Skip["etrn"] = true
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	r, err := Run(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"accept/3", "relay"} {
		if f := r.get(key); f == nil || len(f.Runs["holdfast"]) != c.Runs {
			t.Errorf("figure %s: %+v", key, f)
		}
	}
}

// TestFillStore checks that the direct fill leaves what the daemon would:
// deferred messages, indexed for flush under the daemon's own policy.
func TestFillStore(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "holdfast.cf")
	cf := "queue_directory = " + dir + "\n" + commonCF(filepath.Join(dir, "transport"))
	if err := os.WriteFile(cfg, []byte(cf), 0o644); err != nil {
		t.Fatal(err)
	}
	db := filepath.Join(dir, "queue.db")
	next := 0
	hot := []string{hotDomain(50, 0), hotDomain(50, 1)}
	plan := func(n int) []string { return fillPlan(n, hot, 10, 7, &next) }
	total, added, err := fillStore(context.Background(), cfg, db, 50, plan)
	if err != nil {
		t.Fatal(err)
	}
	if total != 50 || added != 50 {
		t.Fatalf("fill: total %d added %d, want 50 50", total, added)
	}
	if total, added, err = fillStore(context.Background(), cfg, db, 50, plan); err != nil || total != 50 || added != 0 {
		t.Fatalf("refill to the same size: %d %d %v", total, added, err)
	}
	c, err := config.Load(cfg)
	if err != nil {
		t.Fatal(err)
	}
	pol, err := flush.New(c)
	if err != nil {
		t.Fatal(err)
	}
	s, err := store.Open(db, store.Options{Eligible: pol.Eligible, PolicyKey: pol.Key()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.Report().Rebuilt {
		t.Error("the daemon's policy found the fill's flush index stale")
	}
	st, err := s.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.Deferred != 50 {
		t.Errorf("stats %+v, want 50 deferred", st)
	}
	if _, ok, _ := s.NextDue(); !ok {
		t.Error("no due entry")
	}
	res, err := s.Flush(hotDomain(50, 1), false)
	if err != nil || res.Messages != 10 {
		t.Errorf("flush of a hot domain: %+v %v, want 10 messages", res, err)
	}
	if err := s.Check(); err != nil {
		t.Error(err)
	}
}

func TestHelpers(t *testing.T) {
	if m, lo, hi := stats([]float64{5, 1, 3, 2, 4}); m != 3 || lo != 1 || hi != 5 {
		t.Errorf("stats: %v %v %v", m, lo, hi)
	}
	if m := median([]float64{1, 2, 3, 10}); m != 2.5 {
		t.Errorf("median of even count: %v", m)
	}
	got, err := intList("10k, 100k,1M 7")
	if err != nil || len(got) != 4 || got[0] != 10000 || got[1] != 100000 || got[2] != 1000000 || got[3] != 7 {
		t.Errorf("intList: %v %v", got, err)
	}
	if _, err := intList("0"); err == nil {
		t.Error("intList accepted 0")
	}
	next := 5
	plan := fillPlan(25, []string{"a", "b"}, 10, 7, &next)
	if len(plan) != 25 || plan[9] != "a" || plan[10] != "b" || plan[20] != fillerDomain(5) || plan[24] != fillerDomain(2) || next != 10 {
		t.Errorf("fillPlan: %v next %d", plan, next)
	}
	c := &Config{Cache: "/c", Sizes: []int{10000, 100000, 1000000}, Domains: 10000, Batch: 100, Runs: 5}
	if got := cacheFile(c, 100000); got != "/c/holdfast-queue-10k_100k-d10000-b100-r5.db" {
		t.Errorf("cacheFile: %s", got)
	}
	for n, want := range map[int]string{10000: "10k", 1000000: "1M", 1500: "1500", 40: "40"} {
		if count(n) != want {
			t.Errorf("count(%d) = %s, want %s", n, count(n), want)
		}
	}
}

// TestPostfixCloneFill fills a private Postfix's deferred queue with
// -postfix-fill clone and runs ETRN on it: Postfix starts on the cloned
// files (postsuper checks every name against its inode), postqueue -j
// lists them all deferred with each hot domain's fast-flush log intact,
// every flushed message reaches the sink, and Postfix logs no warning.
// Needs root and Postfix.
func TestPostfixCloneFill(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the Postfix side needs root")
	}
	if _, err := exec.LookPath("postfix"); err != nil {
		t.Skip("postfix not installed (Debian package postfix)")
	}
	c := tiny(t, "")
	c.Postfix, c.PostfixFill = true, "clone"
	c.Sizes, c.PostfixSizes = nil, []int{300}
	c.Skip["accept"], c.Skip["relay"] = true, true
	// Postfix's daemons run as user postfix and must reach the queue;
	// t.TempDir() is closed to other users.
	work, err := os.MkdirTemp("", "bench-postfix-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(work) })
	if err := os.Chmod(work, 0o755); err != nil {
		t.Fatal(err)
	}
	c.Work = work
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	r, err := Run(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"etrn-reply/300", "etrn-deliver/300", "startup/300", "disk/300"} {
		f := r.get(key)
		if f == nil || len(f.Runs["postfix"]) == 0 {
			t.Errorf("figure %s missing", key)
		}
	}
	if n := len(r.get("etrn-deliver/300").Runs["postfix"]); n != c.Runs {
		t.Errorf("ETRN runs: %d, want %d", n, c.Runs)
	}
	for _, n := range r.Notes {
		if strings.Contains(n, "Postfix logged") {
			t.Error(n)
		}
	}
}
