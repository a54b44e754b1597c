package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/holdfast-mta/holdfast/internal/wal"
	bolt "go.etcd.io/bbolt"
)

// The journal (queue.db.journal, package internal/wal) takes a new
// message's acceptance off bbolt's commit: Spool.Enqueue of a message
// that fits in one chunk appends the message (record and body) to the
// journal, whose append is one sequential write and one fdatasync shared
// with the sessions appending at the same moment, and returns: the caller
// may answer 250. The applier files the message in bbolt right after, in
// one shared commit with every record pending by then (and with whatever
// else commits at that moment), and writes the highest journal sequence
// number applied (meta journal-applied) in the same transaction. Open
// applies the records the file does not have yet before anything reads
// the queue; every other operation first waits for the records journaled
// before it to be applied (fence), so that what was acknowledged is
// visible to it exactly as if it had been committed to bbolt directly.

// DefaultJournalSize is the size of the journal file (two halves used in
// turn; a message is released from the journal once applied).
const DefaultJournalSize = wal.DefaultSize

// journalRetry is how long the applier waits before trying again after
// a failed apply (full disk, damaged page).
const journalRetry = time.Second

// applyDelay is how long a journaled record may wait to be applied,
// applyCount how many may wait and applyBytes how much content: the
// fewer bbolt commits, the fewer fsyncs beside the journal's. A fence
// does not wait for the delay. applyBytes keeps the journal (whose half
// is released only once all its records are applied) from filling with
// large messages, which would send acceptance to the direct path.
const (
	applyDelay = 50 * time.Millisecond
	applyCount = 1024
	applyBytes = 1 << 20
)

// metaJournal is the key in bucket meta of the highest journal sequence
// number applied to the file: absent means 0.
var metaJournal = []byte("journal-applied")

// jrecV1 is the version byte of a journal record: version, ID length,
// ID, uvarint length of the envelope record, the envelope record
// (encodeMessage), the content.
const jrecV1 = 1

// journal is the store's side of the journal: the records handed over by
// Spool.Enqueue and not yet applied, and the applier's state.
type journal struct {
	log *wal.Log
	// gate: journal enqueues hold it shared from their append to the
	// hand-over; Close takes it to let them finish.
	gate sync.RWMutex
	// last is the highest sequence number handed over; applied the
	// highest applied (both only grow). The fence compares them.
	last, applied atomic.Uint64
	// pendingBytes counts the content of records not applied yet, for
	// the MaxSize check.
	pendingBytes atomic.Int64
	// broken: the journal failed a write; every enqueue then takes the
	// direct path.
	broken atomic.Bool
	// incoming counts the records pending of messages due now and not
	// leased at acceptance (StateIncoming): Run's Lease files them
	// (journaledIncoming); the others (held, deferred on arrival) wait
	// for the applier.
	incoming atomic.Int64

	mu   sync.Mutex
	cond *sync.Cond
	// pending holds the records handed over, by sequence number. They
	// are applied in order, from applied+1 up, never past a gap: a record
	// applied past an earlier one not yet handed over would set
	// journal-applied past it, and a crash would then lose it.
	pending map[uint64]*jrec
	// byID finds a pending record by queue ID (the content is read from
	// memory until it is applied: Store.journaled); top is the highest
	// sequence number up to which every record is handed over.
	byID map[ID]*jrec
	top  uint64
	// err is the last apply's failure, nil once an apply succeeds:
	// meanwhile fences do not wait and writes do not file (fence).
	err     error
	closing bool
	// waiters counts fences waiting (tests wait for one to block).
	waiters int
	// kick tells the applier a record is pending; now that it must
	// apply at once (a fence waits, many records pending, Close).
	kick, now chan struct{}
	done      chan struct{}
	// hold stops the applier before each apply until closed (tests: a
	// crash between the journal's fsync and the apply).
	hold chan struct{}
}

type jrec struct {
	seq  uint64
	m    *Message
	body []byte
	// state, under journal.mu: recPending, recFiling (a transaction
	// filing it has taken it: it may not be ended unfiled any more), or
	// recEnded (a leased message ended by Finish before it was filed:
	// never filed).
	state uint8
}

const (
	recPending = iota
	recFiling
	recEnded
)

// encodeJournal is the journal record of m and its content.
func encodeJournal(m *Message, body []byte) []byte {
	rec := encodeMessage(m)
	b := make([]byte, 0, 2+len(m.ID)+binary.MaxVarintLen64+len(rec)+len(body))
	b = append(b, jrecV1, byte(len(m.ID)))
	b = append(b, m.ID...)
	b = binary.AppendUvarint(b, uint64(len(rec)))
	b = append(b, rec...)
	return append(b, body...)
}

// decodeJournal reverses encodeJournal.
func decodeJournal(b []byte) (*Message, []byte, error) {
	if len(b) < 2 || b[0] != jrecV1 || len(b) < 2+int(b[1]) {
		return nil, nil, fmt.Errorf("%w: journal record of %d bytes: bad header", ErrCorrupt, len(b))
	}
	id := ID(b[2 : 2+int(b[1])])
	b = b[2+len(id):]
	n, k := binary.Uvarint(b)
	if k <= 0 || n > uint64(len(b)-k) {
		return nil, nil, fmt.Errorf("%w: journal record %s: bad length", ErrCorrupt, id)
	}
	m, err := decodeMessage(id, b[k:k+int(n)])
	if err != nil {
		return nil, nil, err
	}
	return m, b[k+int(n):], nil
}

// openJournal opens the journal next to the queue file and applies the
// records the file lacks, in a synced transaction. Open calls it after
// the migrations and before anything reads the queue. A journal file
// that exists is always read, whatever the options; the store keeps
// using it unless it was opened without one (JournalSize negative, or
// zero with NoSync: a store that does not sync gains nothing from it).
func (s *Store) openJournal() error {
	size := s.o.JournalSize
	keep := size > 0 || (size == 0 && !s.o.NoSync)
	if size <= 0 {
		size = DefaultJournalSize
	}
	path := s.path + ".journal"
	fi, err := os.Stat(path)
	exists := err == nil && fi.Size() > 0
	if exists {
		size = fi.Size() // never rewritten at another size: it may hold records
	} else if !keep {
		return nil
	}
	var applied uint64
	err = s.dbView(func(tx *bolt.Tx) error {
		applied = uint64(getInt(tx.Bucket(bktMeta).Get(metaJournal)))
		return nil
	})
	if err != nil {
		return err
	}
	log, recs, err := wal.Open(path, size, applied)
	if err != nil && !exists {
		// No journal to read, and none can be made (a full disk): the
		// store commits every message directly, as without one.
		s.report.JournalErr = fmt.Errorf("journal %s: %w", path, err)
		return nil
	}
	if errors.Is(err, wal.ErrGap) || errors.Is(err, wal.ErrSize) {
		// Acknowledged records missing, or a file no Log made: the
		// daemon stops pointing at salvage, which copies what it can.
		return fmt.Errorf("%w: journal %s: %w", ErrDamaged, path, err)
	}
	if err != nil {
		return fmt.Errorf("journal %s: %w", path, err)
	}
	log.OnCommit = s.o.OnJournalCommit
	sameOwner(path, s.path)
	if err := s.replay(log, recs); err != nil {
		log.Close()
		return fmt.Errorf("journal %s: %w", path, err)
	}
	if !keep {
		return log.Close()
	}
	j := &journal{log: log, pending: map[uint64]*jrec{}, byID: map[ID]*jrec{}, kick: make(chan struct{}, 1), now: make(chan struct{}, 1), done: make(chan struct{}), hold: s.o.journalHold}
	j.cond = sync.NewCond(&j.mu)
	last := applied
	if len(recs) > 0 {
		last = recs[len(recs)-1].Seq
	}
	j.applied.Store(last)
	j.last.Store(last)
	j.top = last
	s.j = j
	return nil
}

// replay applies the records Open read from the journal in one
// transaction, synced even with NoSync (the journal is then released).
func (s *Store) replay(log *wal.Log, recs []wal.Record) error {
	if len(recs) == 0 {
		return nil
	}
	batch := make([]*jrec, len(recs))
	for i, r := range recs {
		m, body, err := decodeJournal(r.Data)
		if err != nil {
			return fmt.Errorf("record %d: %w", r.Seq, err)
		}
		batch[i] = &jrec{seq: r.Seq, m: m, body: body}
	}
	err := s.dbUpdate(s.applyFn(batch))
	if err == nil && s.o.NoSync {
		err = s.guard("", s.db.Sync)
	}
	if err != nil {
		return fmt.Errorf("apply: %w", classify(err))
	}
	log.Release(recs[len(recs)-1].Seq)
	s.report.Replayed = len(recs)
	return nil
}

// sameOwner gives a file the store created (the journal) the owner of the
// queue file: a command run as root must not leave the daemon's user a
// journal it cannot open.
func sameOwner(path, like string) {
	var st, own syscall.Stat_t
	if syscall.Stat(like, &st) != nil || syscall.Stat(path, &own) != nil {
		return
	}
	if st.Uid != own.Uid || st.Gid != own.Gid {
		os.Chown(path, int(st.Uid), int(st.Gid))
	}
}

// applyFn is the transaction that files records in bbolt (fileRecords).
func (s *Store) applyFn(batch []*jrec) func(tx *bolt.Tx) error {
	return func(tx *bolt.Tx) error {
		w := s.begin(tx)
		if err := w.fileRecords(batch); err != nil {
			return err
		}
		return w.commit()
	}
}

// fileRecords inserts the messages of records in the transaction and
// sets journal-applied to the last. A record whose message the file
// already holds (same ID, arrival and size: a journal append that failed
// after its write, the message then committed directly) is skipped, so
// that it is not delivered twice; a queue ID taken by another message,
// which NewID never gives within a process, gets a new one rather than
// be lost. It only changes the transaction and may run more than once.
func (w *wtx) fileRecords(batch []*jrec) error {
	for _, r := range batch {
		if j := w.s.j; j != nil {
			j.mu.Lock()
			ended := r.state == recEnded
			if !ended {
				r.state = recFiling
			}
			j.mu.Unlock()
			if ended {
				continue // delivered while journaled: nothing to file
			}
		}
		m := r.m
		if v := w.msg.Get(msgKey(m.ID)); v != nil {
			if old, err := decodeMessage(m.ID, v); err == nil && old.Size == m.Size && old.Arrival.Equal(m.Arrival) {
				continue
			}
			m = clone(m)
			m.ID = NewID()
		}
		if err := w.insert(m, r.body); err != nil {
			return err
		}
	}
	return w.meta.Put(metaJournal, putInt(int64(batch[len(batch)-1].seq)))
}

// applyIn files, in w's transaction, the pending records after the
// transaction's journal-applied up to target, and returns the
// transaction's journal-applied after it. Any writer may do it (the
// applier, or an operation that would otherwise wait for the applier:
// Store.write): journal-applied in the transaction says what is filed
// already, in an earlier commit or earlier in the same one, so two
// writers never file a record twice.
func (s *Store) applyIn(w *wtx, target uint64) (uint64, error) {
	j := s.j
	from := uint64(getInt(w.meta.Get(metaJournal)))
	var batch []*jrec
	j.mu.Lock()
	for seq := from + 1; seq <= target; seq++ {
		r, ok := j.pending[seq]
		if !ok {
			break
		}
		batch = append(batch, r)
	}
	j.mu.Unlock()
	if len(batch) == 0 {
		return from, nil
	}
	if err := w.fileRecords(batch); err != nil {
		return 0, err
	}
	return batch[len(batch)-1].seq, nil
}

// markApplied records that a commit filed every record up to top.
func (s *Store) markApplied(top uint64) {
	j := s.j
	j.mu.Lock()
	if top <= j.applied.Load() {
		j.mu.Unlock()
		return
	}
	var n int64
	for seq := j.applied.Load() + 1; seq <= top; seq++ {
		if r, ok := j.pending[seq]; ok {
			n += int64(len(r.body))
			if r.m.State == StateIncoming {
				j.incoming.Add(-1)
			}
			delete(j.pending, seq)
			if j.byID[r.m.ID] == r {
				delete(j.byID, r.m.ID)
			}
		}
	}
	j.err = nil
	j.applied.Store(top)
	j.cond.Broadcast()
	j.mu.Unlock()
	j.pendingBytes.Add(-n)
	j.log.Release(top)
}

// journaled returns the content of a message whose record waits to be
// applied.
func (s *Store) journaled(id ID) ([]byte, bool) {
	j := s.j
	if j == nil || j.applied.Load() >= j.last.Load() {
		return nil, false
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	if r, ok := j.byID[id]; ok {
		return r.body, true
	}
	return nil, false
}

// journaledIncoming says whether a message due now and not leased at
// acceptance (StateIncoming) is journaled and not filed yet.
func (s *Store) journaledIncoming() bool {
	return s.j != nil && s.j.incoming.Load() > 0
}

// finishJournaled ends a message leased at acceptance whose record is
// still journaled and not taken by a filing transaction, when f leaves
// it nothing to deliver and makes no bounce: the record is then never
// filed (fileRecords skips it) and the message is gone, with no commit.
// Until the next filing commit moves meta/journal-applied past it, a
// crash leaves it in the journal, and the next Open files it active and
// returns it to the queue: it is delivered again (docs/reliability.md
// row 2; a graceful stop files the journal first). It says whether it
// ended it.
func (s *Store) finishJournaled(id ID, f Finish) bool {
	j := s.j
	if j == nil || len(f.Bounces) > 0 || j.applied.Load() >= j.last.Load() {
		return false
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	r, ok := j.byID[id]
	if !ok || r.state != recPending || r.m.State != StateActive {
		return false
	}
	m := clone(r.m)
	if applyOutcomes(m, f, s.now()) != nil || m.Pending() {
		return false
	}
	r.state = recEnded
	return true
}

// piggyback says up to which record a write must file the pending
// records in its own transaction (0: none pending). ok is false when a
// record before the target is not handed over yet: the caller then waits
// (fence).
func (s *Store) piggyback() (target uint64, ok bool) {
	j := s.j
	if j == nil {
		return 0, true
	}
	target = j.last.Load()
	if j.applied.Load() >= target {
		return 0, true
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.err != nil {
		// The applier fails (full disk, damaged page): this write goes
		// ahead without the records, which stay journaled for the
		// applier's next try and the next Open.
		return 0, true
	}
	return target, j.top >= target
}

// journalEnqueue queues m with its content through the journal. It
// returns false, with nothing done, when the journal cannot take it (no
// journal, full, broken, or the applier failing): the caller then takes
// the direct path. m is prepared; it is not kept.
func (s *Store) journalEnqueue(m *Message, body []byte) (bool, error) {
	j := s.j
	if j == nil || j.broken.Load() {
		return false, nil
	}
	j.gate.RLock()
	defer j.gate.RUnlock()
	if s.closed.Load() {
		return true, ErrClosed
	}
	j.mu.Lock()
	failing := j.err != nil
	j.mu.Unlock()
	if failing {
		return false, nil
	}
	if err := s.checkJournalSize(len(body)); err != nil {
		return true, err
	}
	seq, err := j.log.Append(encodeJournal(m, body))
	if errors.Is(err, wal.ErrFull) || errors.Is(err, wal.ErrTooBig) {
		return false, nil // no room for it: this one commits directly
	}
	if err != nil {
		// Nothing was acknowledged; stop using a journal that fails.
		j.broken.Store(true)
		return false, nil
	}
	held := j.pendingBytes.Add(int64(len(body)))
	j.mu.Lock()
	r := &jrec{seq: seq, m: clone(m), body: body}
	if m.State == StateIncoming {
		j.incoming.Add(1)
	}
	j.pending[seq], j.byID[r.m.ID] = r, r
	if seq > j.last.Load() {
		j.last.Store(seq)
	}
	for j.pending[j.top+1] != nil {
		j.top++
	}
	many := len(j.pending) >= applyCount || held >= applyBytes
	j.mu.Unlock()
	signal(j.kick)
	if many {
		signal(j.now)
	}
	return true, nil
}

// checkJournalSize is checkSize for a journaled message: the file's live
// pages plus the content journaled and not yet applied.
func (s *Store) checkJournalSize(n int) error {
	if s.o.MaxSize <= 0 {
		return nil
	}
	return s.dbView(func(tx *bolt.Tx) error {
		return s.checkSize(tx, n+int(s.j.pendingBytes.Load()))
	})
}

// journalLast is the sequence number of the last record handed over to
// the applier (0 without a journal).
func (s *Store) journalLast() uint64 {
	if s.j == nil {
		return 0
	}
	return s.j.last.Load()
}

// journalErr is the applier's failure, if it is failing.
func (s *Store) journalErr() error {
	if s.j == nil {
		return nil
	}
	s.j.mu.Lock()
	defer s.j.mu.Unlock()
	return s.j.err
}

// fence waits until every record handed over before the call is applied.
// With nothing pending it is one atomic load each side. While the applier
// fails (full disk, a damaged page) it does not wait: the caller goes on
// without those records, which stay journaled (reported through
// OnJournal), so that one message that cannot be filed does not stop the
// rest of the queue; Backup alone refuses to go on without them.
func (s *Store) fence() error {
	j := s.j
	if j == nil {
		return nil
	}
	target := j.last.Load()
	if j.applied.Load() >= target {
		return nil
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	j.waiters++
	defer func() { j.waiters-- }()
	signal(j.now)
	for j.applied.Load() < target {
		if j.err != nil {
			// The applier fails: the read goes ahead without the
			// records it cannot file (reported through OnJournal), so
			// that the rest of the queue keeps being delivered.
			return nil
		}
		if j.closing && len(j.pending) == 0 {
			return ErrClosed
		}
		j.cond.Wait()
		signal(j.now) // the apply that woke us may have stopped short
	}
	return nil
}

// runApplier is the applier's goroutine. Records wait up to applyDelay
// to be applied, so that one bbolt commit files many of them: at once
// when a fence waits for them, when applyCount (or applyBytes of content)
// are pending, or at Close.
func (s *Store) runApplier() {
	j := s.j
	defer close(j.done)
	t := time.NewTimer(time.Hour)
	t.Stop()
	for {
		<-j.kick
		t.Reset(applyDelay)
		select {
		case <-j.now:
		case <-t.C:
		}
		t.Stop()
		if j.hold != nil {
			<-j.hold
		}
		for s.applyPending() {
		}
		j.mu.Lock()
		stop := j.closing && (len(j.pending) == 0 || j.err != nil)
		j.mu.Unlock()
		if stop {
			return
		}
	}
}

// signal makes a non-blocking send on a wake-up channel of one slot.
func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// applyPending applies the records handed over in one shared commit,
// and says whether it applied any. A failure leaves the records journaled
// and pending; it is reported and tried again after journalRetry (at
// Close, not: the next Open applies them).
func (s *Store) applyPending() bool {
	j := s.j
	j.mu.Lock()
	target := j.top
	j.mu.Unlock()
	if target <= j.applied.Load() {
		return false
	}
	var top uint64
	err := s.shared(func(tx *bolt.Tx) error {
		if s.o.journalFault != nil {
			if err := s.o.journalFault(); err != nil {
				return err
			}
		}
		w := s.begin(tx)
		var err error
		if top, err = s.applyIn(w, target); err != nil {
			return err
		}
		return w.commit()
	})
	if err == nil {
		s.markApplied(top)
		return true
	}
	j.mu.Lock()
	j.err = classify(err)
	closing := j.closing
	j.cond.Broadcast()
	j.mu.Unlock()
	if s.o.OnJournal != nil {
		s.o.OnJournal(fmt.Errorf("store: apply journal records %d-%d: %w", j.applied.Load()+1, target, classify(err)))
	}
	if !closing {
		time.AfterFunc(journalRetry, func() {
			signal(j.kick)
			signal(j.now)
		})
	}
	return false
}

// closeJournal lets the journal enqueues under way finish, applies what
// is pending (what cannot be applied stays in the journal for the next
// Open) and closes the journal.
func (s *Store) closeJournal() {
	j := s.j
	if j == nil {
		return
	}
	j.gate.Lock()
	j.mu.Lock()
	j.closing = true
	j.cond.Broadcast()
	j.mu.Unlock()
	j.gate.Unlock()
	signal(j.kick)
	signal(j.now)
	<-j.done
	j.log.Close()
}
