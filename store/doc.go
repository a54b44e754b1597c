/*
Package store is holdfast's mail queue: one bbolt file holding the
envelopes, the message contents, the retry schedule and the fast-flush
index, changed only by transactions that each do one whole state change.
It is the only package that imports bbolt.

# Basics

Open the queue with Open, enqueue with Enqueue (group commit, commit.go:
concurrent SMTP sessions share one fsync, a lone one does not wait, and
Enqueue returns only after the commit), lease due messages with Lease (or a
destination's messages, due or not, with LeaseDest: ODMR), end an
attempt with Finish. Flush, FlushAll and FlushID expedite deferred mail
(ETRN, sendmail -q, postqueue -i). Hold, Release, Requeue and Delete (and
their *All forms) are the postsuper operations; List pages through the
queue; Stats reads counters kept in the meta bucket.

Buckets (names and key codecs are in keys.go):

	meta     schema version, policy fingerprint, counters, journal-applied
	msg      id -> envelope record (record.go: version byte, fields, CRC-32C)
	body     id -> content of at most 256 KiB (every body in schema 1)
	         id ‖ big-endian chunk number -> bucket {0x00 -> 256 KiB of content}
	spool    id -> ∅                                  bodies being written (Spool)
	due      big-endian unix nanos ‖ id -> ∅         the schedule
	flush    reversed domain ‖ 0x00 ‖ id -> ∅        the fast-flush index
	hold     id -> ∅                                  messages on hold
	active   id -> ∅                                  leases, recovered at Open
	dest     destination -> dead-until, reason, last flush
	corrupt  id/msg, id/body -> records that did not decode

The journal (journal.go, the file path+".journal", package
internal/wal): Spool.Enqueue of a message of one chunk or less appends
it to the journal (one write and one fdatasync shared by the sessions
appending at the same moment) and returns; the applier files it in
bbolt within applyDelay, with journal-applied in the same transaction.
Every other operation sees it first: reads wait for it (fence), writes
file it in their own transaction (Store.write), its content is read from
memory meanwhile. The delivery path reads only what it needs
(batchFiled, viewFiled): Lease files the incoming ones and leases them
in one commit, and a message leased at acceptance (journaled with its
lease) that its Finish ends before the applier files it is never filed
(finishJournaled). Open files what a crash left in the journal before
anything reads.

Queue IDs are 12 characters of base32 (extended-hex alphabet, so byte
order is numeric order) over 42 bits of Unix milliseconds and 18 random
bits: time-ordered, so the msg bucket is in arrival order and List pages
in arrival order; not guessable from a neighbour.

A message is incoming (due now), active (leased), deferred (due later)
or on hold. Incoming and deferred messages have exactly one due entry,
at Message.Due; Lease seeks to the start of bucket due and stops at now,
so its cost does not depend on the queue size. Each recipient has its own
state, attempt count and next attempt; the message is due at the earliest
NextAttempt of its pending recipients. When no recipient is pending the
message, its body and all its entries are deleted in the same
transaction.

Content. A body of up to BodyChunk (256 KiB) is one value; a larger one
is stored in chunks of BodyChunk, each the one value of its own nested
bucket, so that adding a chunk never makes bbolt copy the chunks before
it (bbolt rewrites a whole leaf to insert, and a leaf keeps up to four
values however big). Spool writes a body as it
arrives: each full chunk is committed on its own (shared with other writers), with
the ID in bucket spool; Spool.Enqueue commits the last chunk, removes
the spool entry and inserts the record in one transaction, so a message
exists only whole and 250 still follows that one commit. Abort deletes
the chunks; Open deletes what a crash left. Options.ContentLimit bounds
the memory of all spools together (one chunk each); Spool waits
Options.ContentWait for a share, then returns ErrBusy. BodyReader reads
one chunk per read transaction (a long read transaction would hold up
bbolt's remap of a growing file), and fails with ErrNotFound, never a
short body, if the message is removed meanwhile.

The flush index. A destination is a recipient's domain in the one form
internal/addr gives it (Recipient.Domain: lower case, no trailing dot,
IDNA A-labels, so mail for u@café.test is indexed under
"xn--caf-dma.test"; schema 3's migration rewrote keys written in the
older U-label form). A flush key is the destination with its labels
reversed ("sub.customer.tld" is stored as "tld.customer.sub"), a 0x00
byte and the ID. Flush(d, false) seeks to "reversed(d)\x00"; Flush(d,
true) also seeks to "reversed(d)." for the sub-domains. The separator
matters: "xcustomer.tld" ("tld.xcustomer") and "customerx.tld" are in
neither range. The index invariant, kept by every transaction and
verified by Check:

	the flush bucket holds exactly one key per (destination, message)
	where the message is not on hold, has a pending recipient whose
	domain is that destination, and Options.Eligible(destination) is
	true — for incoming, active and deferred messages alike.

DESIGN.md adds a message to the index when it is deferred. We index from
the moment of Enqueue instead, and keep the entries while the message is
active, because a flush must reach all of the destination's mail, not
only mail that has already failed once: mail not yet attempted (queued
behind a busy scheduler, or deferred on arrival by defer_transports)
must be expedited too, and mail being delivered right now must be
retried as soon as the attempt ends if it fails again — Postfix drops
such flush requests (reference spec §6.9). Flush therefore marks the
pending recipients of an active message FlushPending; Finish turns that
into Forced and due now. The cost is one index key per eligible
destination per message for its whole life instead of only while
deferred; a message to a destination that is not eligible costs nothing.
Since every change goes through one function (wtx.save) that derives the
entries from the old and the new record, the index cannot drift from the
records.

A flush (FlushRun) walks the destination's index range in chunks of
FlushChunk (256) entries, one transaction per chunk, resuming after the
last key it handled: no transaction grows with the destination, and each
is shared with concurrent Enqueues (one commit). Each
chunk is durable on its own; a crash between two leaves the rest of the
destination's mail at its old schedule and changes nothing else. A
message already forced and due is counted but not rewritten, so a
repeated flush of mail not yet attempted costs reads. In a subtree flush
a message with recipients in several sub-domains is expedited at its
first key only. FlushAll walks the msg bucket in the same chunks.

Counters (messages per state, content bytes, quarantined records) are
updated in the transaction that changes them, so Stats is O(1).

# Caveats

The Eligible function and PolicyKey must change together: Open rebuilds
the index only when the stored PolicyKey differs from Options.PolicyKey.
A rebuild, like Check, walks the whole queue in one transaction.

bbolt allows one process: a second Open waits Options.Timeout for the
file lock and fails with ErrLocked, naming the pid found in the sidecar
file "<path>.pid" that Open writes and Close removes (the lock itself is
bbolt's flock; the pid file is only a label and may be stale). Compact
needs the queue closed.

The file never shrinks: freed pages are reused (a steady state is
reached under constant load) but only Compact returns space to the file
system. The file is kept written with zeros up to 4 MiB past bbolt's
high-water mark (grow.go), so that commits overwrite blocks rather than
fill holes (bbolt grows a file with ftruncate), and a commit's fdatasync
has no block to allocate; on a full disk that writing gives up quietly
and bbolt grows the file as before. Options.MaxSize counts live pages (file high-water mark minus
free pages) and applies to Enqueue only, so deliveries and bounces can
always proceed. When bbolt cannot grow or re-map the file the error is
ErrNoSpace and the transaction is rolled back; bbolt reports mmap and
resize failures only as text, which classify matches.

A record that fails its checksum or does not decode is moved, with its
body, to the corrupt bucket by the first write transaction that meets it
(Options.OnCorrupt is called after the commit so that the caller can log
it; Stats.Corrupt counts them; Delete by ID removes them). Moving it
aside scans the due and flush buckets for its ID, since a corrupt record
cannot say which entries it had: rare, and exact. Read operations (Get,
List) report or skip such records without moving them.

A message held while active keeps its lease: Finish records the outcome
and leaves it on hold; Release before that returns it to active. Delete
of an active message makes the worker's Finish fail with ErrNotFound.

Enqueue, Lease, Finish, the flush chunks and the spool's chunks share
their commits through the store's committer (commit.go), a group commit
without a fixed timer: a writer that finds no commit running commits at
once, alone; writers that arrive while one is running queue, and the
first of them commits them all together as soon as it ends; nobody
waits for a timer (a wait after a shared commit for its writers to come
back was measured and dropped: docs/benchmarks.md). So a lone SMTP
session never waits for company, and under contention a batch grows with the length
of a commit (its fsyncs). bbolt's DB.Batch (redone under guard as
damage.go's batcher, now used only by the benchmark that compares the
two) always waits out its MaxBatchDelay (1 ms) unless 1,000 calls
arrive first. The closures may run more than once (a batch is run
again without a failing member, which then runs alone); the OnCorrupt
callback is called after the commit, from the run that committed.
Unlease and the operator operations are single transactions; a flush
is one shared transaction per chunk. Enqueue takes the schedule from
the recipients, so mail deferred on arrival (defer_transports) costs one
commit, not three (enqueue, lease, finish). Options.NoSync is for tests
and benchmarks only.

bbolt settings, chosen by measurement (bench_test.go; the figures and
their history are in docs/benchmarks.md, "The store's settings"): the
hash-map freelist, written at every commit, so that Open does not walk
the whole file to rebuild it; the msg, body and due buckets split pages
at 90% instead of bbolt's 50%, since their keys mostly grow.

A damaged file. bbolt panics when a page fails its checks (and a wild
page number faults), so every transaction the store runs goes through
guard, which turns the panic or fault into a *DamageError (ErrDamaged)
naming the page and, from a page walk done once at the first damage
(pages.go, bounds-checked reads of the file, no bbolt), the bucket. Shared
commits (commit.go) run, their commit included, under guard in the
goroutine of the writer that leads them, never in a goroutine of
bbolt's. Lease, LeaseDest, the flushes, the operator operations by ID
and the lease recovery of Open read each message through loadGuarded: a
record on an unreadable page is skipped, reported once to
Options.OnDamaged with its ID, and left in the file; the rest of the
queue goes on. A delivery whose delete cannot be committed (bbolt reads
the neighbours of a page a delete empties) is recorded by retire
instead: the record stays, with every recipient done, out of every index
and counter. Check walks the pages before bbolt's own check (which
runs in a goroutine of bbolt's, where a fault would kill the process).
Salvage copies what can still be read into a new file: it reads every
page not on bbolt's freelist with bounds checks (so a damaged root or
branch page hides nothing below it), decodes records (their CRC tells a
record from a body) and body chunks (body.go: each the one value of a
nested bucket named by bodyKey, inline or on pages of its own), and
enqueues each message whose record and whole body survive through
Enqueue and Hold, which rebuild the indexes and counters. It names the
lost messages it can (records without their body; IDs in the due and
flush indexes without a record).

Record encoding: version 1 is the only version. A later version adds a
decoder and keeps the old ones; encodeMessage always writes the newest.
*/
package store
