package cluster

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/holdfast-mta/holdfast/internal/etcdtest"
	"github.com/holdfast-mta/holdfast/internal/testutil"
	"github.com/holdfast-mta/holdfast/store"
)

// flushes records the flushes a node applies (the local flush service's
// place; the store has its own tests).
type flushes struct {
	mu  sync.Mutex
	got []string
}

func (f *flushes) Flush(site string, subtree bool) (store.FlushResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.got = append(f.got, fmt.Sprintf("%s/%v", site, subtree))
	return store.FlushResult{Messages: 1}, nil
}

func (f *flushes) list() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.got...)
}

func startNode(t testing.TB, etcd *etcdtest.Server, name string, f Flusher, maxAge time.Duration) *Node {
	t.Helper()
	n, err := New(Options{Endpoints: []string{etcd.URL}, Cluster: "t", Node: name,
		FlushMaxAge: maxAge, MemberTTL: 2 * time.Second, SummaryInterval: time.Second,
		Log: zerolog.New(zerolog.NewTestWriter(t))}, f, func() (map[string]int, error) {
		return map[string]int{"customer.tld": 3}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	n.Start()
	t.Cleanup(n.Close)
	waitUntil(t, "join", n.Connected)
	return n
}

func waitUntil(t testing.TB, what string, cond func() bool) {
	t.Helper()
	testutil.Eventually(t, 30*time.Second, what, cond)
}

// A request is applied once by every other node, never by its origin;
// a node that was away catches up from its last applied revision, kept
// in etcd across its restart, and applies nothing twice.
func TestApplyOnceAndCatchUp(t *testing.T) {
	etcd := etcdtest.Start(t)
	var fx, fy flushes
	x := startNode(t, etcd, "x", &fx, time.Minute)
	y := startNode(t, etcd, "y", &fy, time.Minute)
	x.Publish("customer.tld", false)
	waitUntil(t, "y applies", func() bool { return len(fy.list()) == 1 })

	y.Close()
	x.Publish("customer.tld", true)
	x.Publish("other.tld", false)
	waitUntil(t, "x publishes", func() bool { return x.Stats().Published == 3 })
	var fy2 flushes
	y2 := startNode(t, etcd, "y", &fy2, time.Minute)
	waitUntil(t, "y catches up", func() bool { return len(fy2.list()) >= 2 })
	// Requests are applied in revision order: one applied twice would
	// come before a request published now.
	x.Publish("marker.tld", false)
	waitUntil(t, "y applies the marker", func() bool { return len(fy2.list()) >= 3 })
	if got := fy2.list(); len(got) != 3 || got[0] != "customer.tld/true" || got[1] != "other.tld/false" || got[2] != "marker.tld/false" {
		t.Fatalf("after the restart y applied %v", got)
	}
	if got := fx.list(); len(got) != 0 {
		t.Fatalf("the origin applied its own requests: %v", got)
	}

	st, err := y2.Status(context.Background())
	if err != nil || !st.Connected || len(st.Members) != 2 || st.Members[0].Node != "x" {
		t.Fatalf("status: %+v, %v", st, err)
	}
	sums, err := y2.Summaries(context.Background())
	if err != nil || len(sums) != 2 || sums[1].Dests["customer.tld"] != 3 {
		t.Fatalf("summaries: %+v, %v", sums, err)
	}
}

// A node back after cluster_flush_max_age skips the requests it missed.
func TestSkipOldRequests(t *testing.T) {
	etcd := etcdtest.Start(t)
	var fx, fy flushes
	x := startNode(t, etcd, "x", &fx, time.Minute)
	const maxAge = 100 * time.Millisecond
	y := startNode(t, etcd, "y", &fy, maxAge)
	y.Close()
	x.Publish("customer.tld", false)
	waitUntil(t, "x publishes", func() bool { return x.Stats().Published == 1 })
	time.Sleep(maxAge + 50*time.Millisecond) // what is tested: the request ages past y's max age
	var fy2 flushes
	y2 := startNode(t, etcd, "y", &fy2, maxAge)
	waitUntil(t, "y skips", func() bool { return y2.Stats().Skipped == 1 })
	if got := fy2.list(); len(got) != 0 {
		t.Fatalf("y applied an old request: %v", got)
	}
}

// BenchmarkFlushRequestCleanup publishes 10,000 flush requests and reports
// etcd's request keys and bytes in use at once and after cluster_flush_max_age
// (2 s here) plus the lease margin and a compaction: the leases remove
// the requests.
//
//	go test -run '^$' -bench FlushRequestCleanup -benchtime 1x ./cluster/
func BenchmarkFlushRequestCleanup(b *testing.B) {
	etcd := etcdtest.Start(b)
	const n = 10000
	x := startNode(b, etcd, "x", &flushes{}, 2*time.Second)
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{etcd.URL}})
	if err != nil {
		b.Fatal(err)
	}
	defer cli.Close()
	measure := func() (keys, bytes int64) {
		ctx := context.Background()
		r, err := cli.Get(ctx, "/holdfast/t/flush/", clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err != nil {
			b.Fatal(err)
		}
		// Compacting the same revision twice fails; that is fine here.
		if _, err := cli.Compact(ctx, r.Header.Revision, clientv3.WithCompactPhysical()); err != nil &&
			!strings.Contains(err.Error(), "compacted") {
			b.Fatal(err)
		}
		st, err := cli.Status(ctx, etcd.URL)
		if err != nil {
			b.Fatal(err)
		}
		return r.Count, st.DbSizeInUse
	}
	k0, b0 := measure()
	start := time.Now()
	for i := range n {
		x.Publish(fmt.Sprintf("d%d.tld", i%100), false)
		if i%1000 == 999 { // Publish never blocks; keep within its buffer
			waitUntil(b, "publish", func() bool { return x.Stats().Published == int64(i+1) })
		}
	}
	waitUntil(b, "publish", func() bool { return x.Stats().Published == n })
	took := time.Since(start)
	k1, b1 := measure()
	waitUntil(b, "cleanup", func() bool { k, _ := measure(); return k == 0 })
	k2, b2 := measure()
	b.ReportMetric(float64(n)/took.Seconds(), "requests/s")
	b.ReportMetric(float64(k1), "keys-full")
	b.ReportMetric(float64(b1), "bytes-full")
	b.ReportMetric(float64(k2), "keys-after")
	b.ReportMetric(float64(b2), "bytes-after")
	b.Logf("before: %d keys %d bytes; after 10,000 requests: %d keys %d bytes; after expiry: %d keys %d bytes",
		k0, b0, k1, b1, k2, b2)
}
