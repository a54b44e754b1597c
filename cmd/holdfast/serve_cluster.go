package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/holdfast-mta/holdfast/cluster"
	"github.com/holdfast-mta/holdfast/config"
	"github.com/holdfast-mta/holdfast/control"
	"github.com/holdfast-mta/holdfast/follow"
	"github.com/holdfast-mta/holdfast/store"
)

// clusterDestLimit bounds the destinations a node's summary lists.
const clusterDestLimit = 1000

// newCluster makes the cluster node when cluster_etcd_endpoints is set
// (nil otherwise: a single host, and nothing of etcd runs) and makes the
// flush service publish each destination flush it carries out. Call it
// before the SMTP and control servers take their copies of the service;
// the node starts with startCluster once the listeners are bound.
func (d *daemon) newCluster(c *config.Config) error {
	endpoints, err := c.List("cluster_etcd_endpoints")
	if err != nil || len(endpoints) == 0 {
		return err
	}
	o := cluster.Options{Endpoints: endpoints, Cluster: c.String("cluster_name"),
		Node: c.String("cluster_node_name"), Username: c.String("cluster_etcd_username"),
		Version: versionLine(), Log: d.log.With().Str("component", "cluster").Logger()}
	if err = config.Read(c.Time, map[string]*time.Duration{
		"cluster_flush_max_age": &o.FlushMaxAge, "cluster_member_ttl": &o.MemberTTL, "cluster_summary_interval": &o.SummaryInterval,
	}); err != nil {
		return err
	}
	if f := c.String("cluster_etcd_password_file"); f != "" {
		b, err := os.ReadFile(f)
		if err != nil {
			return fmt.Errorf("cluster_etcd_password_file: %w", err)
		}
		o.Password, _, _ = strings.Cut(string(b), "\n")
	}
	if o.TLS, err = clusterTLS(c); err != nil {
		return err
	}
	counter := func() (map[string]int, error) { return d.store.DestCounts(clusterDestLimit) }
	d.cluster, err = cluster.New(o, d.flush.Local("cluster"), counter)
	if err != nil {
		return err
	}
	d.cluster.SetFollower(func(ctx context.Context, dest string, subtree bool, wait time.Duration,
		flush func() (store.FlushResult, error), report func(follow.Status)) error {
		return follow.Flush(ctx, d.store, d.feed, dest, subtree, wait, flush, report)
	})
	d.flush.SetPublisher(d.cluster)
	d.clusterMetrics()
	return nil
}

// clusterTLS builds the client TLS configuration from the
// cluster_etcd_tls_* files (nil: plain connections).
func clusterTLS(c *config.Config) (*tls.Config, error) {
	ca, cert, key := c.String("cluster_etcd_tls_ca_file"), c.String("cluster_etcd_tls_cert_file"),
		c.String("cluster_etcd_tls_key_file")
	if ca == "" && cert == "" {
		return nil, nil
	}
	t := &tls.Config{MinVersion: tls.VersionTLS12}
	if ca != "" {
		pem, err := os.ReadFile(ca)
		if err != nil {
			return nil, fmt.Errorf("cluster_etcd_tls_ca_file: %w", err)
		}
		t.RootCAs = x509.NewCertPool()
		if !t.RootCAs.AppendCertsFromPEM(pem) {
			return nil, errors.New("cluster_etcd_tls_ca_file: no certificate found")
		}
	}
	if cert != "" {
		pair, err := tls.LoadX509KeyPair(cert, key)
		if err != nil {
			return nil, fmt.Errorf("cluster_etcd_tls_cert_file: %w", err)
		}
		t.Certificates = []tls.Certificate{pair}
	}
	return t, nil
}

// startCluster joins the cluster in the background, with the first SMTP
// address in the member record. It never waits on etcd.
func (d *daemon) startCluster() {
	if d.cluster == nil {
		return
	}
	if addrs := d.smtpAddrs(); len(addrs) > 0 {
		d.cluster.SetSMTP(addrs[0])
	}
	d.cluster.Start()
}

// stopCluster leaves the cluster; before the flush service closes, since
// the node applies requests through it.
func (d *daemon) stopCluster() {
	if d.cluster != nil {
		d.cluster.Close()
	}
}

// clusterMetrics exports the node's state and counters.
func (d *daemon) clusterMetrics() {
	n := d.cluster
	gauge := func(name, help string, f func() float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f)
	}
	counter := func(name, help string, f func() float64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, f)
	}
	d.metrics.Registry().MustRegister(
		gauge("holdfast_cluster_connected", "1 while this node is in the etcd cluster, 0 while it serves as a single host.",
			func() float64 {
				if n.Connected() {
					return 1
				}
				return 0
			}),
		counter("holdfast_cluster_flush_published_total", "Flush requests published to the cluster.",
			func() float64 { return float64(n.Stats().Published) }),
		counter("holdfast_cluster_flush_applied_total", "Flush requests of other nodes applied to this queue.",
			func() float64 { return float64(n.Stats().Applied) }),
		counter("holdfast_cluster_flush_skipped_total", "Flush requests skipped (too old, unreadable, not eligible here).",
			func() float64 { return float64(n.Stats().Skipped) }),
		counter("holdfast_cluster_flush_dropped_total", "Flush requests dropped while etcd was away and the buffer full.",
			func() float64 { return float64(n.Stats().Dropped) }),
		counter("holdfast_cluster_disconnects_total", "Sessions with etcd that failed or ended.",
			func() float64 { return float64(n.Stats().Failures) }),
	)
}

// clusterView is the node as the control socket sees it.
type clusterView struct{ n *cluster.Node }

func (v clusterView) Status(ctx context.Context) (any, error)    { return v.n.Status(ctx) }
func (v clusterView) Summaries(ctx context.Context) (any, error) { return v.n.Summaries(ctx) }
func (v clusterView) FlushWait(dest string, subtree bool, wait time.Duration) (string, error) {
	return v.n.FlushWait(dest, subtree, wait)
}
func (v clusterView) FlushResults(ctx context.Context, id string) (any, error) {
	return v.n.FlushResults(ctx, id)
}

// clusterView is nil (no cluster endpoints) on a single host.
func (d *daemon) clusterView() control.Cluster {
	if d.cluster == nil {
		return nil
	}
	return clusterView{d.cluster}
}

// The cluster node is made once at start: a reload names a changed
// cluster parameter as needing a restart.
func init() {
	restartOnly = append(restartOnly, "cluster_etcd_endpoints", "cluster_name", "cluster_node_name",
		"cluster_etcd_username", "cluster_etcd_password_file", "cluster_etcd_tls_ca_file",
		"cluster_etcd_tls_cert_file", "cluster_etcd_tls_key_file", "cluster_flush_max_age",
		"cluster_member_ttl", "cluster_summary_interval")
}

// clusterPublish is how ATRN publishes its domains (nil on a single
// host): each becomes a flush request the other hosts apply to their own
// queue.
func (d *daemon) clusterPublish() func(string) {
	if d.cluster == nil {
		return nil
	}
	return func(domain string) { d.cluster.Publish(domain, false) }
}
