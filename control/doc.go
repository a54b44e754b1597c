// Package control is the operator interface of a running holdfast: an
// HTTP/JSON API on a Unix socket (control_socket) for the command line
// (Server), and its client (Client). The Prometheus metrics are package
// metrics; the outcome feed behind `holdfast flush --wait` is package
// follow; local submission takes package accept's path.
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
// # Caveats
//
// A listing pages through the queue in arrival (ID) order while mail moves
// on; as with Postfix's showq a message can change state between pages.
package control
