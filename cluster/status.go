package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Status is what `holdfast cluster status` shows.
type Status struct {
	Cluster string `json:"cluster"`
	Node    string `json:"node"`
	// Connected: this node is in the cluster now; Since: the time of the
	// last change; Error: why it is not, or the last reason it left.
	Connected bool      `json:"connected"`
	Since     time.Time `json:"since"`
	Error     string    `json:"error,omitempty"`
	// AppliedRevision is the etcd revision of the last flush request
	// handled here.
	AppliedRevision int64 `json:"applied_revision"`
	// Counters since start.
	Published int64 `json:"published"`
	Applied   int64 `json:"applied"`
	Skipped   int64 `json:"skipped"`
	Dropped   int64 `json:"dropped"`
	Failures  int64 `json:"failures"`
	// Members are the live nodes (empty when etcd cannot be reached).
	Members []MemberStatus `json:"members,omitempty"`
}

// MemberStatus is a live node and when its lease was last renewed.
type MemberStatus struct {
	Member
	LastSeen time.Time `json:"last_seen"`
}

// Stats are the node's counters (for metrics).
type Stats struct {
	Connected                                      bool
	Published, Applied, Skipped, Dropped, Failures int64
}

// Stats reads the counters without asking etcd.
func (n *Node) Stats() Stats {
	return Stats{Connected: n.connected.Load(), Published: n.published.Load(), Applied: n.appliedN.Load(),
		Skipped: n.skipped.Load(), Dropped: n.dropped.Load(), Failures: n.failures.Load()}
}

// Status reports this node's state and, when etcd answers, the live
// members. It asks etcd (bounded by ctx and opTimeout).
func (n *Node) Status(ctx context.Context) (Status, error) {
	n.mu.Lock()
	st := Status{Cluster: n.o.Cluster, Node: n.o.Node, Connected: n.connected.Load(), Since: n.since, Error: n.lastErr}
	n.mu.Unlock()
	if st.Connected {
		st.Error = ""
	}
	s := n.Stats()
	st.AppliedRevision = n.applied.Load()
	st.Published, st.Applied, st.Skipped, st.Dropped, st.Failures = s.Published, s.Applied, s.Skipped, s.Dropped, s.Failures
	if !st.Connected {
		return st, nil
	}
	octx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	r, err := n.cli.Get(octx, n.prefix("members"), clientv3.WithPrefix())
	if err != nil {
		st.Error = err.Error()
		return st, nil
	}
	now := time.Now()
	for _, kv := range r.Kvs {
		var m MemberStatus
		if json.Unmarshal(kv.Value, &m.Member) != nil {
			continue
		}
		m.LastSeen = now
		if ttl, err := n.cli.TimeToLive(octx, clientv3.LeaseID(kv.Lease)); err == nil && ttl.TTL > 0 {
			// The lease is renewed every third of its TTL: the time since
			// the last renewal is what it lost since then.
			m.LastSeen = now.Add(-time.Duration(ttl.GrantedTTL-ttl.TTL) * time.Second)
		}
		st.Members = append(st.Members, m)
	}
	sort.Slice(st.Members, func(i, j int) bool { return st.Members[i].Node < st.Members[j].Node })
	return st, nil
}

// Summaries returns every live node's last published counts, by node.
func (n *Node) Summaries(ctx context.Context) ([]Summary, error) {
	if !n.connected.Load() {
		return nil, fmt.Errorf("cluster: etcd unreachable (this node serves as a single host)")
	}
	octx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	r, err := n.cli.Get(octx, n.prefix("summary"), clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("cluster: summaries: %w", err)
	}
	var out []Summary
	for _, kv := range r.Kvs {
		var s Summary
		if json.Unmarshal(kv.Value, &s) == nil {
			out = append(out, s)
		}
	}
	sort.Slice(out, func(i, j int) bool { return strings.Compare(out[i].Node, out[j].Node) < 0 })
	return out, nil
}
