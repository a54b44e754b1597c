package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/holdfast-mta/holdfast/follow"
	"github.com/holdfast-mta/holdfast/store"
)

// Progress is one node's share of `holdfast flush DOMAIN --cluster
// --wait`, kept in etcd at result/<request>/<node> with the request's
// lease and rewritten about once a second while the node follows it.
type Progress struct {
	Node string `json:"node"`
	// The node's follower's report, the same as a single host's flush
	// --wait line.
	follow.Status
}

// Follower notes the recipients a flush of dest concerns, calls flush,
// and then follows them in the background for at most wait, calling
// report about once a second and a last time with End set. It returns
// flush's error (and then reports nothing). follow.Flush is one.
type Follower func(ctx context.Context, dest string, subtree bool, wait time.Duration,
	flush func() (store.FlushResult, error), report func(follow.Status)) error

// SetFollower lets the node follow the requests that ask for it; before
// Start. Without one, FlushWait fails and such requests are applied as
// plain ones.
func (n *Node) SetFollower(f Follower) { n.follow = f }

// WaitStatus is what `flush --cluster --wait` reads: the live members
// and each node's report so far.
type WaitStatus struct {
	Members []string   `json:"members"`
	Results []Progress `json:"results"`
}

// FlushWait flushes dest here and follows it, then publishes the flush
// as a request that every other node applies, follows and reports on. It
// answers the request's ID, for FlushResults. Unlike Publish it waits on
// etcd (bounded): the operator asked for the cluster's answer.
func (n *Node) FlushWait(dest string, subtree bool, wait time.Duration) (string, error) {
	if !n.connected.Load() { // set after Start, which sets n.ctx
		return "", errors.New("cluster: etcd unreachable (this node serves as a single host; use flush --wait)")
	}
	if n.follow == nil {
		return "", errors.New("cluster: this node cannot follow flushes")
	}
	r := Request{Dest: dest, Subtree: subtree, Origin: n.o.Node, Time: time.Now(), WaitFor: wait}
	r.Wait = fmt.Sprintf("%020d-%s-%d", r.Time.UnixNano(), n.o.Node, n.seq.Add(1))
	ctx, cancel := context.WithTimeout(n.ctx, opTimeout)
	defer cancel()
	lease, err := n.grant(ctx, n.o.FlushMaxAge+n.o.FlushMaxAge/4)
	if err != nil {
		return "", err
	}
	if err := n.followFlush(r, lease); err != nil {
		return "", err
	}
	if err := n.put(ctx, n.requestKey(r), r, lease); err != nil {
		return "", err
	}
	n.published.Add(1)
	return r.Wait, nil
}

// followFlush applies a request that asks to be followed: flush, follow,
// and report under result/<id>/<node> with the request's lease. A failed
// flush is reported too, so that the waiting operator need not time out.
func (n *Node) followFlush(r Request, lease clientv3.LeaseID) error {
	key := n.prefix("result") + r.Wait + "/" + n.o.Node
	report := func(s follow.Status) {
		if err := n.put(n.ctx, key, Progress{Node: n.o.Node, Status: s}, lease); err != nil {
			n.log.Debug().Err(err).Msg("cluster: reporting a followed flush")
		}
	}
	wait := n.o.FlushMaxAge
	if r.WaitFor > 0 {
		wait = min(wait, r.WaitFor)
	}
	err := n.follow(n.ctx, r.Dest, r.Subtree, wait,
		func() (store.FlushResult, error) { return n.flusher.Flush(r.Dest, r.Subtree) }, report)
	if err != nil {
		report(follow.Status{End: true, Error: err.Error()})
	}
	return err
}

// FlushResults reads the live members and the reports on request id.
func (n *Node) FlushResults(ctx context.Context, id string) (WaitStatus, error) {
	var ws WaitStatus
	if !n.connected.Load() {
		return ws, errors.New("cluster: etcd unreachable (this node serves as a single host)")
	}
	if id == "" || strings.Contains(id, "/") {
		return ws, errors.New("cluster: invalid request id")
	}
	octx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	m, err := n.cli.Get(octx, n.prefix("members"), clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return ws, fmt.Errorf("cluster: members: %w", err)
	}
	for _, kv := range m.Kvs {
		ws.Members = append(ws.Members, strings.TrimPrefix(string(kv.Key), n.prefix("members")))
	}
	r, err := n.cli.Get(octx, n.prefix("result")+id+"/", clientv3.WithPrefix())
	if err != nil {
		return ws, fmt.Errorf("cluster: results: %w", err)
	}
	for _, kv := range r.Kvs {
		var p Progress
		if json.Unmarshal(kv.Value, &p) == nil {
			ws.Results = append(ws.Results, p)
		}
	}
	sort.Strings(ws.Members)
	sort.Slice(ws.Results, func(i, j int) bool { return ws.Results[i].Node < ws.Results[j].Node })
	return ws, nil
}
