// Package cluster coordinates several holdfast hosts through etcd: who is
// in the cluster, the flush requests every host must apply to its own
// queue, and small per-destination summaries.
//
// # Basics
//
// Each host keeps its own queue (bbolt); nothing of a message leaves the
// host that accepted it. A Node joins the cluster under
// /holdfast/<cluster>/ in etcd:
//
//	members/<node>     JSON Member, on the node's lease (member TTL)
//	summary/<node>     JSON Summary, on the same lease
//	flush/<time>-<node>-<seq>   JSON Request, on a shared lease of
//	                   cluster_flush_max_age plus a margin
//	applied/<node>     the last etcd revision this node applied
//
// A flush accepted on a host (ETRN, flush DOMAIN, postqueue -s) is carried
// out locally first, as on a single host, and then handed to Publish,
// which never blocks: a goroutine writes it to etcd when etcd answers.
// Every node watches the flush prefix and applies each request of
// another node once, in revision order; the revision of the last one
// applied is kept in memory and in applied/<node>, so a node that was
// down or cut off catches up from there (requests older than
// cluster_flush_max_age are skipped, and etcd deletes them with their
// lease).
//
// # Caveats
//
// etcd is never in the mail path: acceptance, delivery and a local flush
// never wait on it. While etcd cannot be reached the node is a single
// host; it logs the change once, reports it in Status and the metrics,
// and reconnects with a capped exponential backoff. The publications of
// that time wait in a bounded buffer (maxPending; beyond it the oldest
// are dropped and counted).
package cluster
