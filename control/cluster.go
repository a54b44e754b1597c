package control

import (
	"context"
	"net/http"
)

// Cluster is the part of the cluster node (package cluster) the control
// socket shows. Each method answers a JSON-encodable value; the CLI
// decodes it into the cluster package's types.
type Cluster interface {
	Status(ctx context.Context) (any, error)
	Summaries(ctx context.Context) (any, error)
}

// CodeNoCluster: the host is not in a cluster.
const CodeNoCluster = "no_cluster"

func (s *Server) noCluster() error {
	return errf(http.StatusNotFound, CodeNoCluster, "this host is not in a cluster (cluster_etcd_endpoints is empty)")
}

// clusterStatus answers the node's state and the live members.
func (s *Server) clusterStatus(w http.ResponseWriter, r *http.Request) error {
	if s.o.Cluster == nil {
		return s.noCluster()
	}
	v, err := s.o.Cluster.Status(r.Context())
	if err != nil {
		return errf(http.StatusServiceUnavailable, CodeInternal, "%v", err)
	}
	return writeJSON(w, v)
}

// clusterSummary answers every live node's per-destination counts.
func (s *Server) clusterSummary(w http.ResponseWriter, r *http.Request) error {
	if s.o.Cluster == nil {
		return s.noCluster()
	}
	v, err := s.o.Cluster.Summaries(r.Context())
	if err != nil {
		return errf(http.StatusServiceUnavailable, CodeInternal, "%v", err)
	}
	return writeJSON(w, v)
}

// ClusterStatus decodes the daemon's cluster status into v.
func (c *Client) ClusterStatus(ctx context.Context, v any) error {
	return c.getJSON(ctx, "/v1/cluster/status", nil, v)
}

// ClusterSummary decodes every node's per-destination counts into v.
func (c *Client) ClusterSummary(ctx context.Context, v any) error {
	return c.getJSON(ctx, "/v1/cluster/summary", nil, v)
}
