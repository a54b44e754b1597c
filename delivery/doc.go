// Package delivery takes mail out of the store and hands it to the next hop
// over SMTP, the way Postfix's qmgr(8) and smtp(8) do together.
//
// # Basics
//
// A Scheduler's Run goroutine leases due messages (store.Lease, in due
// order, at most ActiveLimit at once), sleeps until store.NextDue (at most
// queue_run_delay) and is woken at once by Wake (new mail, a flush, a
// release). A flush leases the mail it makes due in its own transaction
// and hands it to Deliver, within the slots Reserve granted (they count
// against ActiveLimit too). Each leased message gets a worker that decides every pending
// recipient that is due or forced by a flush:
//
//   - the transport map (Postfix's search order) gives a transport and a
//     next hop; without an entry the transport is relay_transport for a
//     relay_domains recipient and default_transport for the others (both
//     SMTP, with their own <transport>_destination_concurrency_limit and
//     defer_transports entries), and the next hop the one those name, else
//     relayhost, else the recipient's domain; error:text bounces,
//     retry:text defers, discard: drops; lmtp:[host]:port,
//     lmtp:inet:host and lmtp:unix:/path deliver over LMTP (RFC 2033:
//     LHLO, one reply per accepted recipient after the content, so each
//     recipient is delivered, deferred or bounced on its own);
//   - transports are the built-in ones (smtp, relay, lmtp, error, retry,
//     discard and every defer_transports name) and the services of a
//     Postfix master.cf (master_cf) whose command is smtp, lmtp, error or
//     discard, with their -o options applied to that transport and
//     maxproc as its limit of deliveries at once. A transport holdfast
//     cannot run (local, virtual, pipe, an unknown name) defers its mail
//     with "4.3.0 mail transport unavailable: <why>", never bounces it;
//     OptionsFromConfig reports such table entries with file and line;
//   - a transport in defer_transports defers ("4.3.2 deferred transport")
//     without a connection, unless a flush forced the recipient. New mail
//     queued through Admit (as serve does) gets that outcome before its
//     acceptance commit, so ETRN-only mail costs one commit, not three
//     (enqueue, lease, finish), and is never leased before a flush. Mail
//     due now that Admit queues while a worker slot is free is leased in
//     its acceptance commit and its delivery started from there (Reserve,
//     Deliver): two commits (enqueue, finish), not three;
//   - a dead next hop (its last connection failed) defers ("delivery
//     temporarily suspended: ...") without a connection until
//     minimal_backoff_time has passed, unless forced; the dead list is kept
//     in the store's dest bucket;
//   - the rest are grouped by (transport, next hop): one SMTP transaction
//     per group of at most <transport>_destination_recipient_limit
//     recipients, over a session from the hop's pool (at most
//     <transport>_destination_concurrency_limit sessions, reused between
//     messages), within delivery_concurrency_limit transactions in all.
//     When the next hop announces PIPELINING (RFC 2920), MAIL FROM, the
//     RCPT TOs and DATA go in one write and the replies are read in order
//     (xfer.go), as Postfix's smtp(8) does: two round trips per message.
//
// The attempt ends with one store.Finish: per-recipient outcomes, the next
// attempt of each deferred recipient (min(maximal_backoff_time,
// minimal_backoff_time * 2^(n-1)) after the n-th failure, on the Clock),
// expiry after maximal_queue_lifetime, and the RFC 3464 notices owed, all in
// one transaction. Outcomes are classified in one function (classify): 2xx
// delivered, 4xx and network errors deferred, 5xx bounced.
//
// Turnaround is the ODMR provider's delivery (RFC 2645): messages leased
// with store.LeaseDest go over the connection the customer opened, with
// the same client, outcomes and DSNs as a scheduled attempt.
//
// # DSN (RFC 3461)
//
// When the next hop announces DSN, RET and ENVID go with MAIL FROM and
// NOTIFY and ORCPT with each RCPT TO; a success notice is then the next
// hop's business. When it does not, a recipient that asked NOTIFY=SUCCESS
// gets Postfix's "Successful Mail Delivery Report" (Action: relayed) from
// us, queued in the attempt's Finish. NOTIFY=NEVER suppresses every
// notice; a NOTIFY list without FAILURE suppresses the non-delivery notice
// and one without DELAY the delay warning for that recipient. The null
// sender never gets a notice.
//
// # Caveats
//
//   - Delivery is at-least-once: a crash after the next hop's 250 and
//     before Finish delivers the message again.
//   - The delay warning is sent when Message.WarnAt has passed; whoever
//     enqueues mail sets WarnAt (arrival + delay_warning_time) as Postfix's
//     cleanup does.
//   - TLS levels are Postfix's: none, may, encrypt, fingerprint, verify,
//     secure, dane and dane-only (RFC 7672, TLSA trusted only with the
//     resolver's AD bit), per destination with smtp_tls_policy_maps. A
//     level above may never sends in plaintext: no STARTTLS defers with
//     4.7.4, a failed handshake or certificate check with 4.7.5.
//   - Every transport is SMTP, LMTP, error, retry or discard; local
//     delivery, pipes and content filters are not holdfast's job.
//   - No success notice for discard: or for a final delivery (there is
//     none: holdfast only relays).
package delivery
