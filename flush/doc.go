// Package flush is holdfast's fast-flush policy: which destinations the
// flush index covers, which ETRN arguments are syntactically valid, and
// the request that turns an ETRN, `holdfast flush DOMAIN` or `holdfast
// flush --all` into store transactions plus a wake-up of the delivery
// scheduler.
//
// # Basics
//
// A destination is the domain of a recipient address in the one form
// internal/addr gives it (addr.DomainOf): lower-cased, without a trailing
// dot, as an IDNA A-label, so `café.test` and `xn--caf-dma.test` are one
// destination for the index, ETRN and `holdfast flush`. It is eligible
// for the flush index when it matches fast_flush_domains (default
// $relay_domains), with parent-domain matching when fast_flush_domains is
// listed in parent_domain_matches_subdomains, exactly as Postfix's flush(8)
// decides (reference spec §2.2). An empty fast_flush_domains turns the
// service off: nothing is indexed and every ETRN gets 459.
//
// The Policy is handed to store.Open as Options.Eligible, so the index
// entries are written and removed inside the store's own transactions
// (Enqueue, Finish, Hold, Delete); this package never writes the index.
// Policy.Key goes to Options.PolicyKey: when fast_flush_domains changes
// between runs the store rebuilds the index at start-up, so a newly
// eligible domain can be flushed at once.
//
// A Service serves flush requests: Flush normalises the site, checks that
// it is eligible (ErrNotEligible otherwise), runs a store.FlushRun — one
// transaction per store.FlushChunk index entries that makes the
// destination's pending recipients due now and forced — wakes the
// scheduler after each chunk and logs the count. It answers when the
// first chunk is committed and finishes a larger destination in the
// background; the Early copy smtpd's ETRN uses answers after reading the
// index, before any commit, and runs the whole flush in the background
// (ETRN is idempotent; README, docs/reliability.md row 37); a request for a destination whose flush is running joins
// it instead of starting another (Exim's smtp_etrn_serialize answers 458
// instead; we answer 250, see README). Close stops the background flushes
// at their next chunk. Every request (Flush, FlushAll, FlushID, and one
// the caller refused for its syntax: Invalid) is told to the Events given
// to SetEvents (the metrics) with its source: "cli", or the event name of
// a copy made by As ("etrn", "cluster"), and its result.
//
// # Caveats
//
//   - ValidSite takes the ETRN argument after the one RFC 1985 prefix
//     character ('@' or '#') has been removed; removing it is the SMTP
//     server's job. Unlike Postfix it accepts a U-label name ("café.test")
//     whose A-label form is a valid host name; Postfix answers 501.
//   - ETRN for a destination is matched against the index exactly: mail
//     for sub.example.com needs `ETRN sub.example.com`, as in Postfix
//     (§2.11), or holdfast's sub-tree form `ETRN @example.com` (RFC 1985
//     sec 5), which Postfix does not have.
//   - Eligibility is re-checked on every request. A table error in
//     fast_flush_domains makes Flush fail with an error that is not
//     ErrNotEligible (Postfix's 458), while Eligible, which cannot report
//     errors, treats it as "not eligible".
//   - Key covers the expanded fast_flush_domains value, the parent-domain
//     matching switch and the contents of the files and tables it names.
//     Those files are read once, when the configuration is loaded: an
//     edited table takes effect at the next start, which also rebuilds
//     the index because the key changed.
//   - The package opens no sockets and keeps no state besides the parsed
//     configuration and the flushes running in the background; a Service
//     is safe for concurrent use.
package flush
