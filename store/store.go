package store

import (
	"errors"
	"fmt"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/holdfast-mta/holdfast/migrations"
	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// Options configure Open.
type Options struct {
	// Timeout is how long Open waits for the file lock held by another
	// process before it gives up with ErrLocked; 0 means one second.
	Timeout time.Duration
	// NoSync skips fsync on commit. Tests and benchmarks only: a crash
	// can lose acknowledged mail.
	NoSync bool
	// Eligible is the fast-flush policy: a pending recipient's domain is
	// indexed when Eligible(domain) is true. nil indexes nothing.
	Eligible func(domain string) bool
	// PolicyKey fingerprints Eligible. When it differs from the key
	// stored in the file, Open rebuilds the flush index.
	PolicyKey string
	// MaxSize, when positive, caps the space the queue's live pages may
	// take: Enqueue fails with ErrNoSpace rather than grow past it.
	MaxSize int64
	// ContentLimit bounds the memory that Spools (messages being
	// received) hold: each holds BodyChunk of it until it is enqueued or
	// aborted; Spool waits for a share, then fails with ErrBusy. 0 means
	// no bound (inflight_content_limit).
	ContentLimit int64
	// ContentWait is how long Spool waits for a share of ContentLimit
	// before ErrBusy; 0 means five seconds.
	ContentWait time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// OnCorrupt, when set, is called after a transaction that moved an
	// undecodable record to the corrupt bucket (store never logs; the
	// caller does). It must not call back into the store.
	OnCorrupt func(id ID, err error)
	// OnDamaged, when set, is called once per message whose record or
	// body sits on a page of the file that cannot be read (a
	// *DamageError): the message is skipped by Lease and the flushes and
	// stays in the file for `holdfast db salvage`. Same rules as
	// OnCorrupt.
	OnDamaged func(id ID, err error)
	// OnCommit, when set, is called after each group commit (Enqueue,
	// Spool, Lease, Finish, the flush chunks) with the time its
	// transaction took, fsync included, and the number of writers whose
	// changes it carried (holdfast_store_commit_*). It is called from
	// the writer that led the commit and must not call back into the
	// store.
	OnCommit func(d time.Duration, writers int)
	// JournalSize is the size of the journal (queue.db.journal, two
	// halves used in turn) through which Spool.Enqueue acknowledges a
	// message of one chunk (journal.go); 0 means DefaultJournalSize, or
	// no journal when NoSync is set; negative means no journal.
	JournalSize int64
	// OnJournal, when set, is called when the journal's records cannot
	// be applied to the file (full disk, damage): they stay journaled,
	// nothing acknowledged is lost, the store tries again every second,
	// and meanwhile the other operations go on without them (so that the
	// rest of the queue is delivered) and Backup fails with the error.
	// Same rules as OnCorrupt.
	OnJournal func(err error)
	// OnJournalCommit, when set, is called after each write of the
	// journal (a group of appends, one fdatasync) with the time it took
	// and its number of records (holdfast_store_journal_commit_*). Same
	// rules as OnCommit.
	OnJournalCommit func(d time.Duration, records int)
	// batchDelay, when positive, commits shared writes through the
	// timer batcher (dbBatch, bbolt's DB.Batch redone) with this
	// MaxBatchDelay instead of the committer (the way before it, for
	// comparison); arrayFreelist and noSyncFreelist
	// select the other bbolt settings. Benchmarks only.
	batchDelay time.Duration
	// gather, when positive, makes the committer wait that long after a
	// shared commit for its writers to come back (committer.last).
	// Benchmarks only.
	gather time.Duration
	// journalHold, when set, stops the journal's applier before each
	// apply until it is closed (tests: a crash between the journal's
	// fsync and the apply).
	journalHold chan struct{}
	// journalFault, when set, is called in each of the applier's
	// transactions; an error fails it (tests: a file that cannot take
	// the records).
	journalFault func() error
	// sparse leaves the growing of the file to bbolt (ftruncate, a
	// hole) instead of growAhead's zeros. Benchmarks only.
	sparse                        bool
	arrayFreelist, noSyncFreelist bool
	pageSize                      int
	fill                          float64
}

// OpenReport says what Open did, for the caller to log.
type OpenReport struct {
	// SchemaFrom and SchemaTo are the schema versions before and after
	// the migrations Open applied.
	SchemaFrom, SchemaTo int
	// Recovered counts leases left active by a crash and returned to
	// incoming.
	Recovered int
	// Rebuilt is set when the flush index was rebuilt because the
	// policy fingerprint changed.
	Rebuilt bool
	// Quarantined counts records moved to the corrupt bucket while
	// opening.
	Quarantined int
	// Replayed counts the journal's records applied to the file at Open
	// (messages acknowledged before a crash, not yet in the file).
	Replayed int
	// JournalErr says why there was no journal to read and none could be
	// made (a full disk): the store then commits every message directly.
	JournalErr error
}

// Store is an open queue database. All methods are safe for concurrent
// use; each exported operation is one bbolt transaction.
type Store struct {
	db      *bolt.DB
	path    string
	o       Options
	closed  atomic.Bool
	budget  *budget
	report  OpenReport
	pidFile string
	// batches is the timer batcher (dbBatch), used only with
	// Options.batchDelay.
	batches batcher
	// The page walk run at the first damage (locate), kept.
	walkOnce     sync.Once
	walkSeen     map[uint64]string
	walkProblems []PageProblem
	// damagedIDs: messages already reported to OnDamaged.
	damagedIDs sync.Map
	// pol is the fast-flush policy in force (Options.Eligible and
	// PolicyKey, then SetPolicy).
	pol atomic.Pointer[policy]
	// zeroed is the end of the part of the file known to be written
	// (growAhead); guarded by bbolt's writer lock.
	zeroed int64
	// file is a descriptor of the queue file for growAhead; nil when it
	// could not be opened (bbolt then grows the file alone).
	file *os.File
	// shared runs a write transaction shared with concurrent writers:
	// the committer's do, or dbBatch (Options.batchDelay).
	shared func(func(*bolt.Tx) error) error
	// j is the journal (journal.go); nil without one.
	j *journal
}

// Open opens (creating if needed) the queue file at path, applies pending
// migrations, rebuilds the flush index if the policy changed, and returns
// leases left behind by a crash to incoming.
func Open(path string, o Options) (*Store, error) {
	if o.Timeout <= 0 {
		o.Timeout = time.Second
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	bo := &bolt.Options{
		Timeout:        o.Timeout,
		NoSync:         o.NoSync,
		NoFreelistSync: o.noSyncFreelist,
		FreelistType:   bolt.FreelistMapType,
	}
	if o.pageSize > 0 {
		bo.PageSize = o.pageSize
	}
	if o.arrayFreelist {
		bo.FreelistType = bolt.FreelistArrayType
	}
	db, err := openBolt(path, bo)
	if err != nil {
		if errors.Is(err, berrors.ErrTimeout) {
			return nil, fmt.Errorf("store: open %s: %w%s", path, ErrLocked, holder(path))
		}
		var de *DamageError
		if errors.As(err, &de) {
			return nil, de
		}
		return nil, fmt.Errorf("store: open %s: %w", path, classify(err))
	}
	s := &Store{db: db, path: path, o: o, pidFile: path + ".pid", budget: newBudget(o.ContentLimit, o.ContentWait)}
	s.SetPolicy(o.Eligible, o.PolicyKey)
	if !o.sparse {
		s.file, _ = os.OpenFile(path, os.O_WRONLY, 0)
	}
	s.shared = (&committer{s: s, gather: o.gather}).do
	if o.batchDelay > 0 {
		db.MaxBatchDelay = o.batchDelay
		s.shared = s.dbBatch
	}
	if err := s.init(); err != nil {
		if s.j != nil {
			s.j.log.Close()
		}
		s.closeFile()
		db.Close()
		return nil, err
	}
	if s.j != nil {
		go s.runApplier()
	}
	// The pid file only names the holder for ErrLocked; the lock itself
	// is bbolt's flock on the queue file.
	os.WriteFile(s.pidFile, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644)
	return s, nil
}

// openBolt opens the file. A truncated file is refused before bbolt sees
// it (checkFileSize); an assertion bbolt raises in this goroutine becomes
// ErrDamaged, leaving its file descriptor and lock behind for a caller
// that reports the error and exits.
func openBolt(path string, bo *bolt.Options) (db *bolt.DB, err error) {
	if err := checkFileSize(path); err != nil {
		return nil, err
	}
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			db, err = nil, (*Store)(nil).damaged("open "+path, r)
		}
	}()
	return bolt.Open(path, 0o600, bo)
}

// holder describes the process named in the pid file, if any.
func holder(path string) string {
	b, err := os.ReadFile(path + ".pid")
	if err != nil {
		return ""
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return ""
	}
	return fmt.Sprintf(" (pid %d)", pid)
}

func (s *Store) init() error {
	var from, to int
	err := s.guard("open", func() error {
		var err error
		from, to, err = migrations.Default.Apply(s.db)
		return err
	})
	var de *DamageError
	if errors.As(err, &de) {
		de.Op = "open " + s.path
		return de
	}
	if errors.Is(err, migrations.ErrTooNew) {
		return fmt.Errorf("store: open %s: %w (file schema %d, binary %d)",
			s.path, ErrSchemaTooNew, from, migrations.Default.Latest())
	}
	if err != nil {
		return fmt.Errorf("store: open %s: %w", s.path, classify(err))
	}
	s.report.SchemaFrom, s.report.SchemaTo = from, to
	if err := s.openJournal(); err != nil {
		var de *DamageError
		if errors.As(err, &de) {
			de.Op = "open " + s.path
			return de
		}
		return fmt.Errorf("store: open %s: %w", s.path, err)
	}
	var stored string
	err = s.dbView(func(tx *bolt.Tx) error {
		stored = string(tx.Bucket(bktMeta).Get(metaPolicy))
		return nil
	})
	if errors.As(err, &de) {
		de.Op = "open " + s.path
		return de
	}
	if err != nil {
		return fmt.Errorf("store: open %s: %w", s.path, err)
	}
	if stored != s.currentPolicy().key {
		if err := s.RebuildIndex(); err != nil {
			return err
		}
		s.report.Rebuilt = true
	}
	return s.update("recover", func(w *wtx) error {
		if err := w.dropSpooled(); err != nil {
			return err
		}
		n, err := w.recoverLeases()
		s.report.Recovered = n
		s.report.Quarantined = len(w.quarantined)
		return err
	})
}

// Report returns what Open did.
func (s *Store) Report() OpenReport { return s.report }

// Path returns the file name of the queue.
func (s *Store) Path() string { return s.path }

// Close closes the database; later calls return ErrClosed.
func (s *Store) Close() error {
	if s.closed.Swap(true) {
		return ErrClosed
	}
	if b, err := os.ReadFile(s.pidFile); err == nil && strings.TrimSpace(string(b)) == strconv.Itoa(os.Getpid()) {
		os.Remove(s.pidFile)
	}
	s.closeJournal()
	err := s.db.Close() // waits for the write transaction in progress
	s.closeFile()
	return err
}

func (s *Store) now() time.Time { return s.o.Now() }

// classify maps storage failures to ErrNoSpace. bbolt formats its mmap
// and resize errors with %s, so the text is all there is to go on.
func classify(err error) error {
	if err == nil || errors.Is(err, ErrNoSpace) {
		return err
	}
	if errors.Is(err, berrors.ErrDatabaseNotOpen) {
		return ErrClosed
	}
	if errors.Is(err, berrors.ErrInvalid) || errors.Is(err, berrors.ErrVersionMismatch) ||
		errors.Is(err, berrors.ErrChecksum) || errors.Is(err, berrors.ErrInvalidMapping) ||
		strings.Contains(err.Error(), "file size too small") {
		return fmt.Errorf("%w: %v", ErrDamaged, err)
	}
	msg := err.Error()
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) ||
		errors.Is(err, berrors.ErrMaxSizeReached) ||
		strings.Contains(msg, "no space left on device") ||
		strings.Contains(msg, "disk quota exceeded") ||
		strings.Contains(msg, "mmap allocate error") ||
		strings.Contains(msg, "file resize error") ||
		strings.Contains(msg, "cannot allocate memory") {
		return fmt.Errorf("%w: %v", ErrNoSpace, err)
	}
	return err
}

// update runs fn in one read-write transaction with the counters kept,
// and reports quarantined records after the commit.
func (s *Store) update(op string, fn func(w *wtx) error) error {
	return s.write(s.dbUpdate, op, fn)
}

// batch is update shared with concurrent writers (commit.go): it commits
// at once when no other commit is running, and otherwise shares the next
// commit (one fsync) with the writers that arrived meanwhile. fn may run
// more than once (when another member of the batch fails, the rest run
// again), so fn must only change the transaction; every side effect
// (OnCorrupt) happens in write, once, after the commit, from the run that
// committed.
func (s *Store) batch(op string, fn func(w *wtx) error) error {
	return s.write(s.shared, op, fn)
}

// write runs fn through run (DB.Update or s.shared).
func (s *Store) write(run func(func(*bolt.Tx) error) error, op string, fn func(w *wtx) error) error {
	return s.writeFrom(run, op, fn, true)
}

// batchFiled is batch for an operation that reads only what is filed (a
// leased message's Finish, a Lease when no incoming message is
// journaled): it neither files the journal's records nor waits for them,
// so that a message leased at acceptance and ended while journaled is
// never filed (journal.go: finishJournaled).
func (s *Store) batchFiled(op string, fn func(w *wtx) error) error {
	return s.writeFrom(s.shared, op, fn, false)
}

// writeFrom is write; journal says whether the records journaled before
// the call are filed first, in this transaction or by a fence.
func (s *Store) writeFrom(run func(func(*bolt.Tx) error) error, op string, fn func(w *wtx) error, journal bool) error {
	if s.closed.Load() {
		return ErrClosed
	}
	// Records journaled before this call are filed in this transaction
	// if the applier has not filed them yet (journal.go).
	var target uint64
	if journal {
		var ok bool
		if target, ok = s.piggyback(); !ok {
			if err := s.fence(); err != nil {
				return err
			}
			target = 0
		}
	}
	var w *wtx
	var top uint64
	err := run(func(tx *bolt.Tx) error {
		w = s.begin(tx)
		if target > 0 {
			var err error
			if top, err = s.applyIn(w, target); err != nil {
				return err
			}
		}
		if err := fn(w); err != nil {
			return err
		}
		return w.commit()
	})
	if err == nil && target > 0 {
		s.markApplied(top)
	}
	if err != nil {
		var de *DamageError
		if errors.As(err, &de) && de.Op == "" {
			de.Op = op
			return de
		}
		return fmt.Errorf("store: %s: %w", op, classify(err))
	}
	s.reportCorrupt(w)
	for i, id := range w.damaged {
		s.reportDamaged(id, w.derrs[i])
	}
	return nil
}

// reportDamaged calls OnDamaged once per message.
func (s *Store) reportDamaged(id ID, err error) {
	if _, dup := s.damagedIDs.LoadOrStore(id, true); dup || s.o.OnDamaged == nil {
		return
	}
	s.o.OnDamaged(id, err)
}

func (s *Store) reportCorrupt(w *wtx) {
	if s.o.OnCorrupt == nil || w == nil {
		return
	}
	for i, id := range w.quarantined {
		s.o.OnCorrupt(id, w.qerrs[i])
	}
}

// view runs fn in a read-only transaction.
func (s *Store) view(fn func(tx *bolt.Tx) error) error {
	if s.closed.Load() {
		return ErrClosed
	}
	if err := s.fence(); err != nil {
		return err
	}
	return classify(s.dbView(fn))
}

// viewFiled is view without the fence, for a read of what is filed
// only: the content of a message (body.go; one still journaled is read
// from memory), Run's look at the schedule (Lease, NextDue: they fence
// in effect, by filing, while an incoming message is journaled).
func (s *Store) viewFiled(fn func(tx *bolt.Tx) error) error {
	if s.closed.Load() {
		return ErrClosed
	}
	return classify(s.dbView(fn))
}

// clone returns a deep copy of m.
func clone(m *Message) *Message {
	c := *m
	c.Recipients = append([]Recipient(nil), m.Recipients...)
	return &c
}
