package cluster

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"

	"github.com/holdfast-mta/holdfast/store"
)

// Options configure a Node. Endpoints, Cluster and Node are required.
type Options struct {
	// Endpoints are the etcd client URLs (cluster_etcd_endpoints).
	Endpoints []string
	// Cluster names the cluster: its keys live under /holdfast/<Cluster>/.
	Cluster string
	// Node is this host's name in the cluster (cluster_node_name).
	Node string
	// SMTP is the address this host receives mail on, shown in Status.
	SMTP string
	// Version is holdfast's version, shown in Status.
	Version string
	// Username and Password authenticate to etcd when set.
	Username, Password string
	// TLS, when set, is used for the connections to etcd.
	TLS *tls.Config
	// FlushMaxAge: requests older than this are skipped, and etcd deletes
	// them a little later (cluster_flush_max_age).
	FlushMaxAge time.Duration
	// MemberTTL is the lease of the membership key: a node that stops
	// renewing it leaves the member list after this long, and a node cut
	// off from etcd notices it after this long (cluster_member_ttl).
	MemberTTL time.Duration
	// SummaryInterval is how often the per-destination counts are
	// published (cluster_summary_interval).
	SummaryInterval time.Duration
	// MaxBackoff caps the wait between reconnection attempts (default
	// MemberTTL).
	MaxBackoff time.Duration
	// Log receives the changes of state, never one line per request.
	Log zerolog.Logger
}

// Flusher flushes this host's own queue for a destination: the flush
// service, whose Flush sets the forced mark as for a local ETRN.
type Flusher interface {
	Flush(site string, subtree bool) (store.FlushResult, error)
}

// Counter returns the per-destination counts of this host's queue.
type Counter func() (map[string]int, error)

// maxPending bounds the publications waiting while etcd is away.
const maxPending = 4096

// opTimeout bounds each etcd call of the node's goroutine.
const opTimeout = 5 * time.Second

// Node is this host's membership in the cluster. Its methods never wait
// on etcd, except Status and Summaries, which the operator asks for.
type Node struct {
	o       Options
	cli     *clientv3.Client
	flusher Flusher
	counter Counter
	follow  Follower
	log     zerolog.Logger
	// ctx lives from Start to Close (the followed flushes use it).
	ctx context.Context

	pub    chan Request
	cancel context.CancelFunc
	done   chan struct{}

	connected atomic.Bool
	// applied is the revision of the last flush request handled; saved
	// the last one kept in etcd (saveApplied).
	applied, saved atomic.Int64
	// Counters, read by Stats.
	published, appliedN, skipped, dropped, failures atomic.Int64
	seq                                             atomic.Int64

	start   time.Time
	mu      sync.Mutex
	state   int
	since   time.Time // of the current state (connected or not)
	lastErr string
}

// New checks the options and makes the etcd client; it does not wait for
// etcd (the connection is made in the background by Start).
func New(o Options, f Flusher, c Counter) (*Node, error) {
	if len(o.Endpoints) == 0 || o.Cluster == "" || o.Node == "" {
		return nil, errors.New("cluster: endpoints, cluster name and node name are required")
	}
	if o.FlushMaxAge <= 0 || o.MemberTTL < time.Second || o.SummaryInterval <= 0 {
		return nil, errors.New("cluster: flush max age, member TTL (at least 1s) and summary interval must be positive")
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = o.MemberTTL
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints: o.Endpoints, DialTimeout: opTimeout, Username: o.Username, Password: o.Password,
		TLS: o.TLS, Logger: zap.NewNop(),
		DialKeepAliveTime: o.MemberTTL, DialKeepAliveTimeout: o.MemberTTL,
		// gRPC's own reconnection backoff grows to 2 minutes by default:
		// capped like the node's, so that a node is back within about
		// MaxBackoff of etcd's return.
		DialOptions: []grpc.DialOption{grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 200 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: o.MaxBackoff},
			MinConnectTimeout: opTimeout,
		})},
	})
	if err != nil {
		return nil, fmt.Errorf("cluster: %w", err)
	}
	n := &Node{o: o, cli: cli, flusher: f, counter: c, log: o.Log,
		pub: make(chan Request, maxPending), done: make(chan struct{}), start: time.Now()}
	return n, nil
}

func (n *Node) started() time.Time { return n.start }

// SetSMTP sets the SMTP address shown in the member record; before Start.
func (n *Node) SetSMTP(a string) { n.o.SMTP = a }

// Start runs the node in the background until Close.
func (n *Node) Start() {
	ctx, cancel := context.WithCancel(context.Background())
	n.cancel, n.ctx = cancel, ctx
	go n.run(ctx)
}

// Close leaves the cluster (the membership key goes with its lease) and
// closes the client. Publications still waiting are dropped.
func (n *Node) Close() {
	if n.cancel != nil {
		n.cancel()
		<-n.done
		// A request applied just before Close, whose save the cancel cut
		// short, is kept now: the node restarted does not apply it again.
		if n.applied.Load() > n.saved.Load() {
			ctx, cancel := context.WithTimeout(context.Background(), closeSaveTimeout)
			n.saveApplied(ctx)
			cancel()
		}
	}
	n.cli.Close()
}

// closeSaveTimeout bounds Close's last save of the applied revision
// (etcd may be the reason for the stop).
const closeSaveTimeout = time.Second

// Publish hands a flush this host carried out to the cluster. It never
// blocks: when the buffer is full (etcd away for long) the oldest waiting
// request is dropped.
func (n *Node) Publish(dest string, subtree bool) {
	r := Request{Dest: dest, Subtree: subtree, Origin: n.o.Node, Time: time.Now()}
	for {
		select {
		case n.pub <- r:
			return
		default:
		}
		select {
		case <-n.pub:
			n.dropped.Add(1)
		default:
		}
	}
}

// Connected reports whether the node is in the cluster now.
func (n *Node) Connected() bool { return n.connected.Load() }

// run keeps the node in the cluster: one session at a time, a capped
// exponential backoff between them.
func (n *Node) run(ctx context.Context) {
	defer close(n.done)
	wait := 200 * time.Millisecond
	for ctx.Err() == nil {
		joined, err := n.session(ctx)
		if ctx.Err() != nil {
			break
		}
		n.failures.Add(1)
		n.setState(false, err)
		if joined {
			wait = 200 * time.Millisecond
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
		case <-t.C:
		}
		wait = min(2*wait, n.o.MaxBackoff)
	}
	n.connected.Store(false)
}

// setState records and logs a change of connection state, once per change.
func (n *Node) setState(up bool, err error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if err != nil {
		n.lastErr = err.Error()
	}
	st := stateDown
	if up {
		st = stateUp
	}
	if n.state == st {
		return
	}
	n.state = st
	n.connected.Store(up)
	n.since = time.Now()
	if up {
		n.log.Info().Strs("endpoints", n.o.Endpoints).Str("cluster", n.o.Cluster).Str("node", n.o.Node).
			Int64("applied_revision", n.applied.Load()).Msg("cluster: joined")
		return
	}
	n.log.Warn().Err(err).Strs("endpoints", n.o.Endpoints).
		Msg("cluster: etcd unreachable; serving as a single host until it returns")
}

// Connection states.
const (
	stateUnknown = iota
	stateUp
	stateDown
)
