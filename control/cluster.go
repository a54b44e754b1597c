package control

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/holdfast-mta/holdfast/flush"
	"github.com/holdfast-mta/holdfast/follow"
	"github.com/holdfast-mta/holdfast/internal/addr"
)

// Cluster is the part of the cluster node (package cluster) the control
// socket shows. Each method answers a JSON-encodable value; the CLI
// decodes it into the cluster package's types.
type Cluster interface {
	Status(ctx context.Context) (any, error)
	Summaries(ctx context.Context) (any, error)
	// FlushWait flushes dest here, follows it, and publishes it to
	// every node as a request each follows and reports on; it answers
	// the request's ID.
	FlushWait(dest string, subtree bool, wait time.Duration) (string, error)
	// FlushResults answers the live members and each node's report on
	// the request id.
	FlushResults(ctx context.Context, id string) (any, error)
}

// ClusterFlushRequest starts `holdfast flush DOMAIN --cluster --wait`.
type ClusterFlushRequest struct {
	Site    string        `json:"site"`
	Subtree bool          `json:"subtree,omitempty"`
	WaitFor time.Duration `json:"wait_for,omitempty"`
}

// ClusterFlushReply names the request whose results the client follows.
type ClusterFlushReply struct {
	ID string `json:"id"`
}

// CodeNoCluster: the host is not in a cluster.
const CodeNoCluster = "no_cluster"

func (s *Server) noCluster() error {
	return errf(http.StatusNotFound, CodeNoCluster, "this host is not in a cluster (cluster_etcd_endpoints is empty)")
}

// clusterStatus answers the node's state and the live members.
func (s *Server) clusterStatus(w http.ResponseWriter, r *http.Request) error {
	return s.clusterAnswer(w, r, Cluster.Status)
}

// clusterSummary answers every live node's per-destination counts.
func (s *Server) clusterSummary(w http.ResponseWriter, r *http.Request) error {
	return s.clusterAnswer(w, r, Cluster.Summaries)
}

// clusterAnswer answers what ask reads from the cluster, or that the host
// is not in one.
func (s *Server) clusterAnswer(w http.ResponseWriter, r *http.Request, ask func(Cluster, context.Context) (any, error)) error {
	if s.o.Cluster == nil {
		return s.noCluster()
	}
	v, err := ask(s.o.Cluster, r.Context())
	if err != nil {
		return errf(http.StatusServiceUnavailable, CodeInternal, "%v", err)
	}
	return writeJSON(w, v)
}

// clusterFlush flushes a destination here and publishes it to the
// cluster as a request that every node follows and reports on.
func (s *Server) clusterFlush(w http.ResponseWriter, r *http.Request) error {
	if s.o.Cluster == nil {
		return s.noCluster()
	}
	var req ClusterFlushRequest
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20)).Decode(&req); err != nil {
		return errf(http.StatusBadRequest, CodeBadRequest, "bad request: %v", err)
	}
	bodyRead(w)
	dest, err := addr.Domain(req.Site)
	if !flush.ValidSite(req.Site) || err != nil {
		return errf(http.StatusBadRequest, CodeInvalidSite,
			"Cannot flush mail queue - invalid destination: %q", truncate(req.Site))
	}
	id, err := s.o.Cluster.FlushWait(dest, req.Subtree, follow.Wait(req.WaitFor))
	if errors.Is(err, flush.ErrNotEligible) {
		return errf(http.StatusConflict, CodeNotEligible,
			"Flush service is not configured for destination %q", truncate(req.Site))
	}
	if err != nil {
		return errf(http.StatusServiceUnavailable, CodeInternal, "%v", err)
	}
	return writeJSON(w, ClusterFlushReply{ID: id})
}

// clusterFlushResults answers the members and the nodes' reports on a
// cluster flush.
func (s *Server) clusterFlushResults(w http.ResponseWriter, r *http.Request) error {
	if s.o.Cluster == nil {
		return s.noCluster()
	}
	id := r.URL.Query().Get("id")
	if id == "" || len(id) > 300 || strings.ContainsAny(id, "/\x00") {
		return errf(http.StatusBadRequest, CodeBadRequest, "bad request: invalid id")
	}
	v, err := s.o.Cluster.FlushResults(r.Context(), id)
	if err != nil {
		return errf(http.StatusServiceUnavailable, CodeInternal, "%v", err)
	}
	return writeJSON(w, v)
}

// ClusterFlush starts a cluster flush and answers its ID.
func (c *Client) ClusterFlush(ctx context.Context, req ClusterFlushRequest) (string, error) {
	resp, err := c.postJSON(ctx, "/v1/cluster/flush", req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var rep ClusterFlushReply
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&rep); err != nil {
		return "", err
	}
	return rep.ID, nil
}

// ClusterFlushResults decodes the members and reports of a cluster flush
// into v.
func (c *Client) ClusterFlushResults(ctx context.Context, id string, v any) error {
	return c.getJSON(ctx, "/v1/cluster/flush", url.Values{"id": {id}}, v)
}

// ClusterStatus decodes the daemon's cluster status into v.
func (c *Client) ClusterStatus(ctx context.Context, v any) error {
	return c.getJSON(ctx, "/v1/cluster/status", nil, v)
}

// ClusterSummary decodes every node's per-destination counts into v.
func (c *Client) ClusterSummary(ctx context.Context, v any) error {
	return c.getJSON(ctx, "/v1/cluster/summary", nil, v)
}
