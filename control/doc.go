// Package control is the operator interface of a running holdfast: an
// HTTP/JSON API on a Unix socket (control_socket) for the command line,
// and the Prometheus /metrics endpoint (metrics_listen).
//
// # Basics
//
// bbolt allows one writing process, so every command that reads or changes
// the queue while the daemon runs goes through this API. Listings and bulk
// operations are streamed as JSON lines and page through the store in
// bounded chunks: a queue of a million messages lists and clears without
// the daemon or the client holding it in memory.
//
// # Access
//
// The peer's credentials come from the socket (SO_PEERCRED). Flush
// requests are checked against authorized_flush_users, listings against
// authorized_mailq_users, local submission against authorized_submit_users
// (all Postfix syntax, default static:anyone); root and the daemon's own
// user always pass. Operations that change or reveal message content
// (delete, hold, release, requeue, show, backup) are for root and the
// daemon's user only. The socket itself is mode 0660: the daemon's group
// is the set of users who may talk to it at all (Postfix's postdrop).
//
// # Metrics hooks
//
// Metrics is nil-safe; the daemon's packages report through it:
//   - smtpd: SessionOpened/SessionClosed per connection, SessionRejected,
//     Stress, RateLimited and the AUTH results (smtpd.Options.Events);
//   - flush: the flush service tells each request (flush.Events, given
//     by flush.Service.SetEvents): FlushRequest("etrn", result, duration)
//     for smtpd's ETRN, FlushRequest("cli", ...) for the control API's
//     flushes (a site refused for its syntax too, "invalid",
//     flush.Service.Invalid), "cluster" for those the cluster applies;
//     ODMR calls FlushRequest("atrn", ...);
//   - accept: Accepted per message committed, from SMTP and local
//     submission alike (accept.Events: smtpd.Options.Events, and the
//     control server's Metrics for local submission);
//   - store: Damaged per unreadable message (store.Options.OnDamaged);
//     ObserveCommit per group commit (store.Options.OnCommit): the
//     commit's duration and how many writers it carried;
//   - delivery: Outcome(id, addr, status) per recipient after the store
//     commit, and ObserveDelivery per attempt. Outcome also tells
//     `holdfast flush --wait` whether a finished message was delivered or
//     bounced.
//
// # Caveats
//
// A listing pages through the queue in arrival (ID) order while mail moves
// on; as with Postfix's showq a message can change state between pages.
package control
