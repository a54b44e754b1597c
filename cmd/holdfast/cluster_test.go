package main

// Tests of the cluster layer (issue 15) against a real etcd
// (internal/etcdtest): several relays wired by startDaemon on loopback,
// each with its own queue, one customer server (testutil.MTA).

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/holdfast-mta/holdfast/internal/etcdtest"
	"github.com/holdfast-mta/holdfast/internal/testutil"
	"github.com/holdfast-mta/holdfast/store"
)

// clusterNode starts a relay that joins the cluster at etcd as name; dir
// keeps its queue across a stop and a start.
func clusterNode(t testing.TB, dir string, mta *testutil.MTA, etcd *etcdtest.Server, name string) *relay {
	t.Helper()
	return startRelay(t, dir, mta,
		"cluster_etcd_endpoints = "+etcd.URL,
		"cluster_name = test",
		"cluster_node_name = "+name,
		"cluster_member_ttl = 2s",
		"cluster_summary_interval = 1s",
		"cluster_flush_max_age = 1m")
}

// hold queues n messages for customer.tld through the store (the
// scheduler defers them: etrn-only) and waits until they are deferred.
// Each Subject names the node and the message.
func (r *relay) hold(node string, n int) []string {
	r.t.Helper()
	var subj []string
	for i := range n {
		s := fmt.Sprintf("%s-%d", node, i)
		body := []byte("Subject: " + s + "\r\nFrom: a@sender.test\r\n\r\nhello\r\n")
		m := &store.Message{Sender: "a@sender.test", Recipients: []store.Recipient{
			{Addr: fmt.Sprintf("u%d@customer.tld", i)}}}
		if err := r.d.store.Enqueue(m, body); err != nil {
			r.t.Fatal(err)
		}
		subj = append(subj, s)
	}
	r.d.sched.Wake()
	r.waitFor(fmt.Sprintf("%d deferred", n), 30*time.Second, func(s store.Stats) bool {
		return s.Deferred == int64(n) && s.Incoming == 0 && s.Active == 0
	})
	return subj
}

// joined waits until the node is in the cluster.
func (r *relay) joined() {
	r.t.Helper()
	testutil.Eventually(r.t, 30*time.Second, "the node to join the cluster", r.d.cluster.Connected)
}

// left waits until the node notices that etcd is gone.
func (r *relay) left() {
	r.t.Helper()
	testutil.Eventually(r.t, 30*time.Second, "the node to notice that etcd stopped", func() bool { return !r.d.cluster.Connected() })
}

// onceEach checks that the MTA received each subject exactly once and
// nothing else.
func onceEach(t *testing.T, mta *testutil.MTA, subj []string) {
	t.Helper()
	got := subjects(mta.Messages())
	for _, s := range subj {
		if got[s] != 1 {
			t.Errorf("message %s delivered %d times", s, got[s])
		}
	}
	if len(got) != len(subj) {
		t.Errorf("%d distinct messages delivered, want %d", len(got), len(subj))
	}
}

// One ETRN at node A delivers the mail of all three nodes, each message
// once; node C, stopped during the ETRN, delivers its share on its
// return without a second ETRN.
func TestClusterETRNEveryNode(t *testing.T) {
	etcd := etcdtest.Start(t)
	mta := testutil.NewMTA(t, testutil.MTAOptions{})
	dirC := t.TempDir()
	a := clusterNode(t, t.TempDir(), mta, etcd, "a")
	b := clusterNode(t, t.TempDir(), mta, etcd, "b")
	c := clusterNode(t, dirC, mta, etcd, "c")
	const per = 100
	subj := append(append(a.hold("a", per), b.hold("b", per)...), c.hold("c", per)...)
	for _, r := range []*relay{a, b, c} {
		r.joined()
	}
	c.stop() // C is down during the ETRN

	if got := a.etrn("customer.tld"); got != "250 Queuing started" {
		t.Fatalf("ETRN: %q", got)
	}
	mta.Wait(2*per, time.Minute)
	c = clusterNode(t, dirC, mta, etcd, "c") // C returns and catches up
	mta.Wait(3*per, time.Minute)
	c.waitEmpty()
	a.waitEmpty()
	b.waitEmpty()
	onceEach(t, mta, subj)
}

// Two ETRNs for the same destination at two nodes at once: every message
// is delivered once.
func TestClusterConcurrentETRN(t *testing.T) {
	etcd := etcdtest.Start(t)
	mta := testutil.NewMTA(t, testutil.MTAOptions{})
	a := clusterNode(t, t.TempDir(), mta, etcd, "a")
	b := clusterNode(t, t.TempDir(), mta, etcd, "b")
	subj := append(a.hold("a", 100), b.hold("b", 100)...)
	a.joined()
	b.joined()
	var wg sync.WaitGroup
	for _, r := range []*relay{a, b} {
		wg.Go(func() {
			if got := r.etrn("customer.tld"); got != "250 Queuing started" {
				t.Errorf("ETRN: %q", got)
			}
		})
	}
	wg.Wait()
	mta.Wait(200, time.Minute)
	a.waitEmpty()
	b.waitEmpty()
	a.quiet(500 * time.Millisecond) // the requests each node gets from the other add nothing
	onceEach(t, mta, subj)
}

// etcd stopped: ETRN at A still answers 250 and delivers A's mail. etcd
// started again: the nodes rejoin and the request made meanwhile reaches
// B.
func TestClusterEtcdDown(t *testing.T) {
	etcd := etcdtest.Start(t)
	mta := testutil.NewMTA(t, testutil.MTAOptions{})
	a := clusterNode(t, t.TempDir(), mta, etcd, "a")
	b := clusterNode(t, t.TempDir(), mta, etcd, "b")
	subjA, subjB := a.hold("a", 50), b.hold("b", 50)
	a.joined()
	b.joined()
	etcd.Stop()
	a.left()

	start := time.Now()
	if got := a.etrn("customer.tld"); got != "250 Queuing started" {
		t.Fatalf("ETRN with etcd down: %q", got)
	}
	t.Logf("ETRN answered in %v with etcd down", time.Since(start))
	mta.Wait(50, time.Minute)
	a.waitEmpty()
	onceEach(t, mta, subjA)
	if st := b.stats(); st.Deferred != 50 {
		t.Fatalf("B's mail moved while etcd was down: %+v", st)
	}

	etcd.Restart()
	a.joined()
	b.joined()
	mta.Wait(100, time.Minute)
	b.waitEmpty()
	onceEach(t, mta, append(subjA, subjB...))
}

// BenchmarkClusterETRN times an ETRN at node A until the last of 300
// messages has reached the customer's server: three nodes holding 100
// each, against one host holding all 300. All run on one machine, so the
// three nodes share its cores and disk.
//
//	go test -run '^$' -bench ClusterETRN -benchtime 5x ./cmd/holdfast/
func BenchmarkClusterETRN(b *testing.B) {
	b.Run("nodes=3x100", func(b *testing.B) {
		etcd := etcdtest.Start(b)
		mta := testutil.NewMTA(b, testutil.MTAOptions{})
		var nodes []*relay
		for _, name := range []string{"a", "b", "c"} {
			nodes = append(nodes, clusterNode(b, b.TempDir(), mta, etcd, name))
		}
		for _, r := range nodes {
			r.joined()
		}
		benchETRN(b, mta, nodes, 100)
	})
	b.Run("nodes=1x300", func(b *testing.B) {
		mta := testutil.NewMTA(b, testutil.MTAOptions{})
		benchETRN(b, mta, []*relay{startRelay(b, b.TempDir(), mta)}, 300)
	})
}

func benchETRN(b *testing.B, mta *testutil.MTA, nodes []*relay, per int) {
	total := per * len(nodes)
	var took []time.Duration
	for range b.N {
		b.StopTimer()
		mta.Reset()
		for _, r := range nodes {
			r.hold("m", per)
		}
		b.StartTimer()
		start := time.Now()
		if got := nodes[0].etrn("customer.tld"); got != "250 Queuing started" {
			b.Fatalf("ETRN: %q", got)
		}
		if got := mta.Wait(total, time.Minute); len(got) < total {
			b.Fatalf("%d of %d delivered", len(got), total)
		}
		took = append(took, time.Since(start))
		b.StopTimer()
		for _, r := range nodes {
			r.waitEmpty()
		}
		b.StartTimer()
	}
	b.ReportMetric(ms(median(took)), "deliver-ms")
}
