package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Request is one flush request as kept in etcd.
type Request struct {
	// Dest is the destination (normalised, as the flush service has it).
	Dest string `json:"dest"`
	// Subtree: the destination and its sub-domains (ETRN "@site").
	Subtree bool `json:"subtree,omitempty"`
	// Origin is the node that accepted the request (and flushed it
	// locally already).
	Origin string `json:"origin"`
	// Time is when it was accepted there.
	Time time.Time `json:"time"`
	// Wait, when set, names the request for `flush --cluster --wait`:
	// each node follows its flush for at most WaitFor and reports under
	// result/<Wait>/<node>.
	Wait    string        `json:"wait,omitempty"`
	WaitFor time.Duration `json:"wait_for,omitempty"`
}

// errLeaseLost ends a session whose membership lease could not be renewed
// (etcd unreachable for MemberTTL) or was revoked.
var errLeaseLost = errors.New("cluster: membership lease lost")

// Member is a node's membership record.
type Member struct {
	Node    string    `json:"node"`
	SMTP    string    `json:"smtp,omitempty"`
	Version string    `json:"version,omitempty"`
	Started time.Time `json:"started"`
}

// Summary is a node's per-destination counts (fast-flush destinations it
// holds mail for), published every SummaryInterval.
type Summary struct {
	Node  string         `json:"node"`
	Time  time.Time      `json:"time"`
	Dests map[string]int `json:"dests"`
}

func (n *Node) prefix(kind string) string {
	return "/holdfast/" + n.o.Cluster + "/" + kind + "/"
}

// session is one stay in the cluster: join, catch up, then watch and
// publish until etcd is lost (the member lease cannot be renewed) or ctx
// ends. joined reports whether it got as far as joining.
func (n *Node) session(ctx context.Context) (joined bool, err error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	lease, err := n.join(ctx, cancel)
	if err != nil {
		return false, err
	}
	defer func() {
		rctx, rcancel := context.WithTimeout(context.Background(), time.Second)
		n.cli.Revoke(rctx, lease) // leave at once on a clean stop
		rcancel()
	}()
	rev, err := n.catchUp(ctx)
	if err != nil {
		return false, err
	}
	n.setState(true, nil)
	watch := n.cli.Watch(clientv3.WithRequireLeader(ctx), n.prefix("flush"),
		clientv3.WithPrefix(), clientv3.WithRev(rev+1))
	summary := time.NewTicker(n.o.SummaryInterval)
	defer summary.Stop()
	n.summarise(ctx, lease)
	var reqLease clientv3.LeaseID
	var reqLeaseAt time.Time
	for {
		select {
		case <-ctx.Done():
			return true, context.Cause(ctx)
		case wr, ok := <-watch:
			if !ok {
				return true, errors.New("cluster: watch ended")
			}
			if err := wr.Err(); err != nil {
				return true, fmt.Errorf("cluster: watch: %w", err)
			}
			n.applyEvents(wr.Events)
			n.saveApplied(ctx)
		case r := <-n.pub:
			if reqLease == 0 || time.Since(reqLeaseAt) > n.o.FlushMaxAge/4 {
				if reqLease, err = n.grant(ctx, n.o.FlushMaxAge+n.o.FlushMaxAge/4); err != nil {
					n.requeue(r)
					return true, cause(ctx, err)
				}
				reqLeaseAt = time.Now()
			}
			if err := n.put(ctx, n.requestKey(r), r, reqLease); err != nil {
				n.requeue(r)
				return true, cause(ctx, err)
			}
			n.published.Add(1)
		case <-summary.C:
			n.summarise(ctx, lease)
		}
	}
}

// cause is why ctx ended (the lease lost) when it did, else err.
func cause(ctx context.Context, err error) error {
	if c := context.Cause(ctx); c != nil {
		return c
	}
	return err
}

// join grants the member lease, keeps it alive and writes the member key.
// When the lease can no longer be renewed it calls lost(errLeaseLost),
// which ends the session at once, even in the middle of a call: a call
// to an etcd that is gone waits for its whole timeout (opTimeout), and
// the session's loop, busy with one (a summary every SummaryInterval),
// would see the lease's end only after it, or after several, as select
// picks at random among ready cases. A node cut off from etcd notices
// within about MemberTTL.
func (n *Node) join(ctx context.Context, lost context.CancelCauseFunc) (clientv3.LeaseID, error) {
	lease, err := n.grant(ctx, n.o.MemberTTL)
	if err != nil {
		return 0, err
	}
	alive, err := n.cli.KeepAlive(ctx, lease)
	if err != nil {
		return 0, fmt.Errorf("cluster: keep-alive: %w", err)
	}
	go func() {
		for range alive {
		}
		lost(errLeaseLost)
	}()
	m := Member{Node: n.o.Node, SMTP: n.o.SMTP, Version: n.o.Version, Started: n.started()}
	if err := n.put(ctx, n.prefix("members")+n.o.Node, m, lease); err != nil {
		return 0, err
	}
	return lease, nil
}

func (n *Node) grant(ctx context.Context, ttl time.Duration) (clientv3.LeaseID, error) {
	octx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	secs := int64((ttl + time.Second - 1) / time.Second)
	g, err := n.cli.Grant(octx, secs)
	if err != nil {
		return 0, fmt.Errorf("cluster: lease: %w", err)
	}
	return g.ID, nil
}

func (n *Node) put(ctx context.Context, key string, v any, lease clientv3.LeaseID) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	octx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	var opts []clientv3.OpOption
	if lease != 0 {
		opts = append(opts, clientv3.WithLease(lease))
	}
	if _, err := n.cli.Put(octx, key, string(b), opts...); err != nil {
		return fmt.Errorf("cluster: put %s: %w", key, err)
	}
	return nil
}

// requestKey sorts by time; node and sequence make it unique.
func (n *Node) requestKey(r Request) string {
	return fmt.Sprintf("%s%020d-%s-%d", n.prefix("flush"), r.Time.UnixNano(), n.o.Node, n.seq.Add(1))
}

// requeue puts back a request that could not be written; it goes out
// after the reconnection (Publish drops the oldest when full).
func (n *Node) requeue(r Request) {
	select {
	case n.pub <- r:
	default:
		n.dropped.Add(1)
	}
}

// catchUp applies the requests in etcd newer than the last applied
// revision (read from applied/<node> after a restart) and returns the
// revision the watch continues from.
func (n *Node) catchUp(ctx context.Context) (int64, error) {
	octx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	if n.applied.Load() == 0 {
		r, err := n.cli.Get(octx, n.prefix("applied")+n.o.Node)
		if err != nil {
			return 0, fmt.Errorf("cluster: read applied revision: %w", err)
		}
		if len(r.Kvs) == 1 {
			v, _ := strconv.ParseInt(string(r.Kvs[0].Value), 10, 64)
			n.applied.Store(v)
		}
	}
	r, err := n.cli.Get(octx, n.prefix("flush"), clientv3.WithPrefix(),
		clientv3.WithMinModRev(n.applied.Load()+1), clientv3.WithSort(clientv3.SortByModRevision, clientv3.SortAscend))
	if err != nil {
		return 0, fmt.Errorf("cluster: catch up: %w", err)
	}
	evs := make([]*clientv3.Event, len(r.Kvs))
	for i, kv := range r.Kvs {
		evs[i] = &clientv3.Event{Type: clientv3.EventTypePut, Kv: kv}
	}
	n.applyEvents(evs)
	if len(evs) > 0 {
		n.saveApplied(ctx)
	}
	return r.Header.Revision, nil
}

// applyEvents flushes the local queue for each new request of another
// node, in revision order, each once.
func (n *Node) applyEvents(evs []*clientv3.Event) {
	for _, ev := range evs {
		if ev.Type != clientv3.EventTypePut || ev.Kv.ModRevision <= n.applied.Load() {
			continue
		}
		n.apply(ev.Kv.Value, clientv3.LeaseID(ev.Kv.Lease))
		n.applied.Store(ev.Kv.ModRevision)
	}
}

func (n *Node) apply(value []byte, lease clientv3.LeaseID) {
	var r Request
	if err := json.Unmarshal(value, &r); err != nil || r.Dest == "" {
		n.log.Warn().Err(err).Msg("cluster: unreadable flush request skipped")
		n.skipped.Add(1)
		return
	}
	if r.Origin == n.o.Node {
		return // flushed here when it was accepted
	}
	if age := time.Since(r.Time); age > n.o.FlushMaxAge {
		n.log.Info().Str("site", r.Dest).Str("origin", r.Origin).Dur("age", age).
			Msg("cluster: flush request older than cluster_flush_max_age skipped")
		n.skipped.Add(1)
		return
	}
	// A requester that waits follows the flush here too (followFlush
	// reports the outcomes under r.Wait).
	followed := r.Wait != "" && n.follow != nil
	var messages int
	var err error
	if followed {
		err = n.followFlush(r, lease)
	} else {
		res, ferr := n.flusher.Flush(r.Dest, r.Subtree)
		messages, err = res.Messages, ferr
	}
	if err != nil {
		n.log.Warn().Err(err).Str("site", r.Dest).Str("origin", r.Origin).Msg("cluster: flush request not applied")
		n.skipped.Add(1)
		return
	}
	n.appliedN.Add(1)
	ev := n.log.Info().Str("event", "cluster_flush").Str("site", r.Dest).Bool("subtree", r.Subtree).Str("origin", r.Origin)
	if followed {
		ev.Str("wait", r.Wait).Msg("cluster: flush request applied and followed")
		return
	}
	ev.Int("messages", messages).Msg("cluster: flush request applied")
}

// saveApplied keeps the last applied revision in etcd, for the catch-up
// after a restart. A failure is retried with the next save.
func (n *Node) saveApplied(ctx context.Context) {
	octx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	applied := n.applied.Load()
	if _, err := n.cli.Put(octx, n.prefix("applied")+n.o.Node, strconv.FormatInt(applied, 10)); err != nil {
		n.log.Debug().Err(err).Msg("cluster: saving the applied revision")
		return
	}
	n.saved.Store(applied)
}

// summarise publishes this node's per-destination counts.
func (n *Node) summarise(ctx context.Context, lease clientv3.LeaseID) {
	if n.counter == nil {
		return
	}
	d, err := n.counter()
	if err != nil {
		n.log.Warn().Err(err).Msg("cluster: counting the queue by destination")
		return
	}
	s := Summary{Node: n.o.Node, Time: time.Now(), Dests: d}
	if err := n.put(ctx, n.prefix("summary")+n.o.Node, s, lease); err != nil {
		n.log.Debug().Err(err).Msg("cluster: publishing the summary")
	}
}
