package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"slices"
	"syscall"

	"github.com/holdfast-mta/holdfast/internal/wal"
)

// SalvageReport says what Salvage copied and what it could not.
type SalvageReport struct {
	// Recovered counts the messages written to the new file (Held of
	// them put back on hold).
	Recovered, Held int
	// Lost lists the queue IDs of messages the damaged file still names
	// (a record without its whole body, or an index entry whose record
	// is unreadable); LostUnnamed counts bodies and records too damaged
	// to name their message. Mail on a page that is gone entirely cannot
	// be counted.
	Lost        []ID
	LostUnnamed int
	// Quarantined counts records that were already in the corrupt bucket
	// (not copied: `holdfast queue` lists them in the old file).
	Quarantined int
	// Pages counts the pages read; Damaged lists those that could not be
	// read (at most 100).
	Pages   int
	Damaged []PageProblem
	// Journaled counts the messages taken from the journal next to the
	// damaged file (acknowledged, not yet applied to it); JournalErr says
	// why the journal could not be read, when it could not (its
	// messages are then not copied: the journal is left as it was).
	Journaled  int
	JournalErr error
	// JournalMissing counts the records missing from the journal after
	// the file's journal-applied (a hole: damage); the records after the
	// hole are copied.
	JournalMissing int
}

// Salvage copies every message that can still be read from the queue file
// src, which may be damaged, into the new queue file dst (which must not
// exist), through the store's normal write path (Enqueue, Hold), so that
// dst's indexes and counters are rebuilt from the records. o configures
// dst as Open would (the flush policy). src is read without bbolt: every
// page that bbolt's freelist does not list as free is read with bounds
// checks, so neither a damaged root nor a damaged branch page hides the
// leaves below it. src must not be open by a running holdfast (ErrLocked).
func Salvage(src, dst string, o Options) (SalvageReport, error) {
	var rep SalvageReport
	if _, err := os.Stat(dst); err == nil {
		return rep, fmt.Errorf("store: salvage: %s exists", dst)
	}
	f, err := os.Open(src)
	if err != nil {
		return rep, fmt.Errorf("store: salvage: %w", err)
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_SH|syscall.LOCK_NB); err != nil {
		return rep, fmt.Errorf("store: salvage %s: %w%s", src, ErrLocked, holder(src))
	}
	fi, err := f.Stat()
	if err != nil {
		return rep, fmt.Errorf("store: salvage: %w", err)
	}
	w, err := openWalk(f, fi.Size(), 100)
	if err != nil {
		return rep, fmt.Errorf("store: salvage %s: %w", src, err)
	}
	sc := &scan{w: w, recs: map[ID]*Message{}, chunks: map[ID][]chunkLoc{}, named: map[ID]bool{}}
	sc.run()
	rep.Pages, rep.Damaged, rep.Quarantined = sc.pages, w.problems, sc.quarantined
	rep.Journaled, rep.JournalMissing, rep.JournalErr = sc.journal(src + ".journal")

	o.NoSync = true // one fsync at the end
	s, err := Open(dst, o)
	if err != nil {
		return rep, err
	}
	if err := sc.copyTo(s, &rep); err != nil {
		s.Close()
		return rep, err
	}
	// The journal stays next to the damaged file and may end up next to
	// this one (`db salvage -replace`): what it holds is in this file now.
	if err := s.update("salvage", func(w *wtx) error {
		return w.meta.Put(metaJournal, putInt(int64(sc.applied)))
	}); err != nil {
		s.Close()
		return rep, err
	}
	if err := s.guard("salvage", s.db.Sync); err != nil {
		s.Close()
		return rep, fmt.Errorf("store: salvage: sync %s: %w", dst, err)
	}
	return rep, s.Close()
}

// chunkLoc is where a body chunk was seen: re-read when copying, so that
// bodies are not all held in memory at once.
type chunkLoc struct {
	seq  uint32
	page uint64
	elem int
	// inline is the path of element indexes to an inline bucket's page
	// inside the leaf (nil for a plain leaf element).
	inline []int
}

type scan struct {
	w           *pageWalk
	pages       int
	recs        map[ID]*Message
	legacy      map[ID]chunkLoc
	chunks      map[ID][]chunkLoc
	named       map[ID]bool // IDs seen in index entries
	quarantined int
	// applied is the source's journal-applied (then the journal's last
	// record read); jbodies the contents of the messages read from the
	// journal.
	applied uint64
	// appliedRead: journal-applied was read (its page may be damaged).
	appliedRead bool
	jbodies     map[ID][]byte
}

// run reads every page in use: not free, not the continuation of a
// multi-page value. bbolt writes the freelist at every commit (doc.go),
// so what it does not list is reachable. Without a readable freelist,
// only the pages reachable through the tree are read.
func (sc *scan) run() {
	w := sc.w
	// The tree walk first: it names the bucket of each damaged page it
	// reaches.
	free, ok := sc.freePages()
	w.walk()
	named := make(map[uint64]bool, len(w.problems))
	for _, p := range w.problems {
		named[p.Page] = true
	}
	fail := func(id uint64, format string, a ...any) {
		if !named[id] {
			w.fail(id, "?", format, a...)
		}
	}
	for id := uint64(2); id < w.hwm; id++ {
		if free[id] {
			continue
		}
		if !ok {
			if _, reached := w.seen[id]; !reached {
				continue
			}
		}
		hdr := make([]byte, boltPageHeader)
		if _, err := w.f.ReadAt(hdr, int64(id*w.psize)); err != nil {
			fail(id, "cannot read: %v", err)
			continue
		}
		le := binary.LittleEndian
		flags, over := le.Uint16(hdr[8:]), uint64(le.Uint32(hdr[12:]))
		if le.Uint64(hdr) != id {
			fail(id, "page says it is page %d", le.Uint64(hdr))
			continue
		}
		if id+over >= w.hwm || int64((id+over+1)*w.psize) > w.size {
			fail(id, "overflow of %d pages runs past the end of the file", over)
			continue
		}
		sc.pages++
		if flags == pgLeaf {
			p := make([]byte, (over+1)*w.psize)
			if _, err := w.f.ReadAt(p, int64(id*w.psize)); err == nil {
				sc.leaf(id, p, nil, w.seen[id])
			}
		} else if flags != pgBranch && flags != pgFreelist && flags != pgMeta {
			fail(id, "not a page bbolt writes (flags %#x)", flags)
		}
		id += over
	}
}

// freePages reads bbolt's freelist page.
func (sc *scan) freePages() (map[uint64]bool, bool) {
	w := sc.w
	if w.freelist < 2 || w.freelist >= w.hwm {
		return nil, false
	}
	p := w.page(w.freelist, "freelist")
	if p == nil || binary.LittleEndian.Uint16(p[8:]) != pgFreelist {
		return nil, false
	}
	delete(w.seen, w.freelist) // page() marks it; the tree walk may follow
	le := binary.LittleEndian
	n, off := uint64(le.Uint16(p[10:])), uint64(boltPageHeader)
	if n == 0xFFFF {
		if len(p) < boltPageHeader+8 {
			return nil, false
		}
		n, off = le.Uint64(p[boltPageHeader:]), off+8
	}
	if off+n*8 > uint64(len(p)) {
		return nil, false
	}
	free := make(map[uint64]bool, n)
	for i := uint64(0); i < n; i++ {
		id := le.Uint64(p[off+i*8:])
		free[id] = true
	}
	return free, true
}

// leaf sorts the elements of a leaf page (or an inline bucket's page) by
// their shape: message records, body chunks, index entries.
func (sc *scan) leaf(id uint64, p []byte, path []int, bucket string) {
	_, keys, vals, _, lflags, ok := sc.w.elems(id, "?", p)
	if !ok {
		return
	}
	for i, k := range keys {
		v := vals[i]
		if lflags[i]&leafIsBucket != 0 {
			if bid, seq, ok := parseBodyKey(k); ok {
				// A body chunk: the one value of its own bucket.
				loc := chunkLoc{seq: seq, page: id, elem: i, inline: path}
				sc.chunks[bid] = append(sc.chunks[bid], loc)
				continue
			}
			if len(v) > bucketHeader && binary.LittleEndian.Uint64(v) == 0 {
				sc.leaf(id, v[bucketHeader:], append(slices.Clone(path), i), string(k))
			}
			continue
		}
		sc.entry(k, v, chunkLoc{page: id, elem: i, inline: path}, bucket)
	}
}

// entry sorts one key/value; bucket is the bucket of its page when the
// tree walk reached it ("" otherwise).
func (sc *scan) entry(k, v []byte, loc chunkLoc, bucket string) {
	if len(k) == idLen+4 && string(k[idLen:]) == "/msg" {
		sc.quarantined++
		return
	}
	if _, id, ok := parseDueKey(k); ok {
		if _, err := ParseID(string(id)); err == nil {
			sc.name(id)
			return
		}
	}
	if _, id, ok := parseFlushKey(k); ok && len(k) > idLen+1 {
		if _, err := ParseID(string(id)); err == nil {
			sc.name(id)
			return
		}
	}
	if bucket == string(bktMeta) && string(k) == string(metaJournal) {
		sc.applied, sc.appliedRead = uint64(getInt(v)), true
		return
	}
	if len(k) != idLen {
		return
	}
	id, err := ParseID(string(k))
	if err != nil {
		return
	}
	if len(v) == 0 && (bucket == string(bktHold) || bucket == string(bktActive)) {
		sc.name(id) // held or being delivered: a message, not a spool
		return
	}
	switch m, err := decodeMessage(id, v); {
	case err == nil:
		sc.recs[id] = m
	case len(v) > 0:
		if sc.legacy == nil {
			sc.legacy = map[ID]chunkLoc{}
		}
		sc.legacy[id] = loc // a schema-1 body, or a damaged record
	}
}

func (sc *scan) name(id ID) { sc.named[id] = true }

// parseBodyKey splits a body chunk's key (bodyKey).
func parseBodyKey(k []byte) (ID, uint32, bool) {
	if len(k) != idLen+4 {
		return "", 0, false
	}
	id, err := ParseID(string(k[:idLen]))
	if err != nil {
		return "", 0, false
	}
	return id, binary.BigEndian.Uint32(k[idLen:]), true
}

// chunk reads a body chunk: the value under chunkValue in the bucket
// whose header is at loc, inline or on a page of its own.
func (sc *scan) chunk(loc chunkLoc) ([]byte, bool) {
	hdr, ok := sc.value(loc)
	if !ok || len(hdr) < bucketHeader {
		return nil, false
	}
	root := binary.LittleEndian.Uint64(hdr)
	var p []byte
	if root == 0 {
		p = hdr[bucketHeader:]
	} else if p = sc.w.readPage(root); p == nil {
		return nil, false
	}
	_, keys, vals, _, lflags, ok := sc.w.elems(root, "body", p)
	if !ok {
		return nil, false
	}
	for i, k := range keys {
		if string(k) == string(chunkValue) && lflags[i]&leafIsBucket == 0 {
			return vals[i], true
		}
	}
	return nil, false
}

// value re-reads the value at loc.
func (sc *scan) value(loc chunkLoc) ([]byte, bool) {
	w := sc.w
	p := w.readPage(loc.page)
	if p == nil {
		return nil, false
	}
	for _, i := range loc.inline {
		_, _, vals, _, _, ok := w.elems(loc.page, "?", p)
		if !ok || i >= len(vals) || len(vals[i]) <= bucketHeader {
			return nil, false
		}
		p = vals[i][bucketHeader:]
	}
	_, _, vals, _, _, ok := w.elems(loc.page, "?", p)
	if !ok || loc.elem >= len(vals) {
		return nil, false
	}
	return vals[loc.elem], true
}

// body reassembles a message's content; false when a chunk is missing or
// the size differs from the record's.
func (sc *scan) body(m *Message) ([]byte, bool) {
	var out []byte
	if b, ok := sc.jbodies[m.ID]; ok {
		out = b
	} else if cs := sc.chunks[m.ID]; len(cs) > 0 {
		slices.SortFunc(cs, func(a, b chunkLoc) int { return int(a.seq) - int(b.seq) })
		for i, c := range cs {
			v, ok := sc.chunk(c)
			if !ok || c.seq != uint32(i) {
				return nil, false
			}
			out = append(out, v...)
		}
	} else if loc, ok := sc.legacy[m.ID]; ok {
		v, ok := sc.value(loc)
		if !ok {
			return nil, false
		}
		out = append(out, v...)
	}
	return out, int64(len(out)) == m.Size && (len(out) > 0 || m.Size == 0)
}

// copyTo enqueues the readable messages into s, in ID order.
func (sc *scan) copyTo(s *Store, rep *SalvageReport) error {
	ids := make([]ID, 0, len(sc.recs))
	for id := range sc.recs {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	now := s.now()
	lost := map[ID]bool{}
	for _, id := range ids {
		m := sc.recs[id]
		if !m.Pending() {
			continue // nothing left to deliver
		}
		body, ok := sc.body(m)
		if !ok {
			lost[id] = true
			continue
		}
		held := m.State == StateHold
		if m.State == StateActive {
			// In flight when the file was damaged: back in the queue as a
			// crash returns it (Enqueue would take StateActive as a lease).
			m.State = StateIncoming
		}
		consumeFlushPending(m, now)
		if err := s.Enqueue(m, body); err != nil {
			if errors.Is(err, ErrNoSpace) {
				return err
			}
			lost[id] = true
			continue
		}
		if held {
			if _, err := s.Hold(id); err != nil {
				return err
			}
			rep.Held++
		}
		rep.Recovered++
	}
	for id := range sc.named {
		if _, ok := sc.recs[id]; !ok {
			lost[id] = true
		}
	}
	for id := range sc.chunks {
		if _, ok := sc.recs[id]; !ok && !sc.named[id] {
			rep.LostUnnamed++
		}
	}
	for id := range lost {
		rep.Lost = append(rep.Lost, id)
	}
	slices.Sort(rep.Lost)
	return nil
}

// journal reads the source's journal (when there is one) from the
// record after journal-applied: messages acknowledged and not yet in the
// file. It is opened at its own size, so that nothing in it is rewritten.
// A hole after journal-applied (damage) is counted in missing and the
// records after it are read; when journal-applied itself could not be
// read, every record the journal holds is.
func (sc *scan) journal(path string) (n, missing int, err error) {
	fi, err := os.Stat(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return 0, 0, nil
		}
		return 0, 0, err
	}
	log, recs, err := wal.Open(path, fi.Size(), sc.applied)
	var before []wal.Record // the records before a hole
	var gap *wal.GapError
	for errors.As(err, &gap) && gap.Next-1 > sc.applied {
		before = append(before, gap.Before...)
		// Without journal-applied (its page damaged, or never written),
		// the records released long ago are no hole: those the file has
		// are skipped below, and a message filed and delivered since may
		// come back (a duplicate, never a loss).
		if sc.appliedRead {
			missing += int(gap.Next - gap.Missing)
		}
		sc.applied = gap.Next - 1
		log, recs, err = wal.Open(path, fi.Size(), sc.applied)
	}
	if err != nil {
		return 0, missing, err
	}
	log.Close()
	for _, r := range append(before, recs...) {
		sc.applied = max(sc.applied, r.Seq)
		m, body, err := decodeJournal(r.Data)
		if err != nil {
			continue
		}
		if _, ok := sc.recs[m.ID]; ok {
			continue
		}
		if sc.jbodies == nil {
			sc.jbodies = map[ID][]byte{}
		}
		sc.recs[m.ID], sc.jbodies[m.ID] = m, body
		n++
	}
	return n, missing, nil
}
