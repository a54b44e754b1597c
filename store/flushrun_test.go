package store

import (
	"fmt"
	"testing"
	"time"
)

// enqueueDeferred queues n messages, one per recipient address made by
// addr(i), deferred by a day, without a Check per message.
func (f *fixture) enqueueDeferred(n int, addr func(i int) string) []ID {
	f.t.Helper()
	var ids []ID
	for i := range n {
		m := newMsg(addr(i))
		m.Recipients[0].NextAttempt = f.clk.Now().Add(24 * time.Hour)
		if err := f.s.Enqueue(m, []byte("Subject: x\r\n\r\nbody\r\n")); err != nil {
			f.t.Fatal(err)
		}
		ids = append(ids, m.ID)
	}
	return ids
}

// TestFlushRunChunks: a destination larger than a chunk is flushed in
// several transactions of at most FlushChunk messages; Remaining says
// what is left; the whole run reaches every message once, and the index
// and counters stay exact (Check in cleanup).
func TestFlushRunChunks(t *testing.T) {
	f := open(t)
	n := 2*FlushChunk + 17
	ids := f.enqueueDeferred(n, func(i int) string { return fmt.Sprintf("u%d@big.tld", i) })
	f.enqueueDeferred(5, func(i int) string { return fmt.Sprintf("u%d@other.tld", i) })
	f.check()

	r := f.s.NewFlushRun("big.tld", false)
	if left, err := r.Remaining(); err != nil || left != n {
		t.Fatalf("Remaining before the run = %d, %v; want %d", left, err, n)
	}
	total, steps := 0, 0
	for !r.Done() {
		res, err := r.Next()
		if err != nil {
			t.Fatal(err)
		}
		if res.Messages > FlushChunk {
			t.Errorf("one step expedited %d messages, more than a chunk (%d)", res.Messages, FlushChunk)
		}
		total += res.Messages
		steps++
		left, err := r.Remaining()
		if err != nil || left != n-total {
			t.Errorf("after step %d: Remaining = %d, %v; want %d", steps, left, err, n-total)
		}
		f.check()
	}
	if total != n || steps != 3 {
		t.Errorf("run expedited %d messages in %d steps; want %d in 3", total, steps, n)
	}
	for _, id := range ids {
		m := f.get(id)
		if m.State != StateIncoming || !m.Recipients[0].Forced {
			t.Fatalf("%s: %s forced=%v after the run", id, m.State, m.Recipients[0].Forced)
		}
	}
	if st := f.stats(); st.Deferred != 5 || st.Incoming != int64(n) {
		t.Errorf("stats %+v; want %d incoming, 5 deferred (other.tld untouched)", st, n)
	}
	// A second flush of mail already expedited writes nothing but counts it.
	res, err := f.s.Flush("big.tld", false)
	if err != nil || res.Messages != n {
		t.Errorf("second Flush = %+v, %v; want %d messages", res, err, n)
	}
}

// TestFlushRunReachesNewMail: mail queued for the destination while a
// run is between chunks is reached by the same run.
func TestFlushRunReachesNewMail(t *testing.T) {
	f := open(t)
	f.enqueueDeferred(FlushChunk+1, func(i int) string { return fmt.Sprintf("u%d@big.tld", i) })
	r := f.s.NewFlushRun("big.tld", false)
	if _, err := r.Next(); err != nil || r.Done() {
		t.Fatalf("first step: %v, done=%v", err, r.Done())
	}
	f.clk.Add(time.Millisecond) // queue IDs are time-ordered
	late := f.enqueueDeferred(1, func(int) string { return "late@big.tld" })[0]
	res, err := r.Next()
	if err != nil || !r.Done() || res.Messages != 2 {
		t.Fatalf("second step = %+v, %v, done=%v; want the last old message and the new one", res, err, r.Done())
	}
	if m := f.get(late); m.State != StateIncoming || !m.Recipients[0].Forced {
		t.Errorf("mail queued during the run: %s forced=%v", m.State, m.Recipients[0].Forced)
	}
}

// TestFlushRunSubtreeOnce: a message with recipients in two sub-domains
// has two index entries under @customer.tld, possibly in different
// chunks; the subtree flush expedites and counts it once.
func TestFlushRunSubtreeOnce(t *testing.T) {
	f := open(t)
	f.enqueueDeferred(FlushChunk, func(i int) string { return fmt.Sprintf("u%d@a.customer.tld", i) })
	m := newMsg("x@a.customer.tld", "y@z.customer.tld", "w@customer.tld")
	for i := range m.Recipients {
		m.Recipients[i].NextAttempt = f.clk.Now().Add(time.Hour)
	}
	if err := f.s.Enqueue(m, []byte("x\r\n")); err != nil {
		t.Fatal(err)
	}
	r := f.s.NewFlushRun("customer.tld", true)
	if left, err := r.Remaining(); err != nil || left != FlushChunk+1 {
		t.Errorf("Remaining = %d, %v; want %d", left, err, FlushChunk+1)
	}
	total := 0
	for !r.Done() {
		res, err := r.Next()
		if err != nil {
			t.Fatal(err)
		}
		total += res.Messages
	}
	if total != FlushChunk+1 {
		t.Errorf("subtree run counted %d messages; want %d", total, FlushChunk+1)
	}
	got := f.get(m.ID)
	for _, rc := range got.Recipients {
		if !rc.Forced {
			t.Errorf("%s not forced", rc.Addr)
		}
	}
}

// TestFlushRunLeases: NextLeased expedites a chunk as Next does and, in
// the same transaction, leases up to n of the messages it made due (not
// a held one, not one already active). The rest stay due
// for Lease. A crash returns the leased ones to the queue, due now and
// still forced for the flushed destination.
func TestFlushRunLeases(t *testing.T) {
	f := open(t)
	ids := f.enqueueDeferred(6, func(i int) string { return fmt.Sprintf("u%d@big.tld", i) })
	f.enqueueDeferred(3, func(i int) string { return fmt.Sprintf("u%d@other.tld", i) })
	held := f.enqueueDeferred(1, func(int) string { return "h@big.tld" })[0]
	if _, err := f.s.Hold(held); err != nil {
		t.Fatal(err)
	}
	busy := f.enqueue("b@big.tld")
	if got := f.lease(); got[busy] == nil {
		t.Fatalf("lease: %v", got)
	}

	r := f.s.NewFlushRun("big.tld", false)
	res, leased, err := r.NextLeased(4)
	if err != nil {
		t.Fatal(err)
	}
	f.check()
	if res.Messages != 7 || res.Active != 1 || !r.Done() {
		t.Errorf("NextLeased: %+v, done %v; want 7 messages, 1 active", res, r.Done())
	}
	if len(leased) != 4 {
		t.Fatalf("NextLeased(4) leased %d", len(leased))
	}
	big := map[ID]bool{}
	for _, id := range ids {
		big[id] = true
	}
	for _, m := range leased {
		if !big[m.ID] || m.State != StateActive || !m.Recipients[0].Forced {
			t.Errorf("leased %s %v forced %v; want one of big.tld's deferred, active, forced", m.ID, m.State, m.Recipients[0].Forced)
		}
		delete(big, m.ID)
		if got := f.get(m.ID); got.State != StateActive {
			t.Errorf("%s is %v in the store, want active", m.ID, got.State)
		}
	}
	if st := f.stats(); st.Active != 5 || st.Incoming != 2 || st.Deferred != 3 || st.Hold != 1 {
		t.Errorf("stats %+v; want 5 active, 2 incoming, 3 deferred, 1 held", st)
	}
	rest := f.lease()
	for id := range big {
		if rest[id] == nil {
			t.Errorf("Lease after NextLeased: %s not leased", id)
		}
	}
	if len(rest) != 2 || len(big) != 2 {
		t.Errorf("Lease after NextLeased: %d messages, want the 2 of big.tld left", len(rest))
	}

	f.crash()
	f.check()
	for _, m := range leased {
		got := f.get(m.ID)
		if got.State != StateIncoming || !got.Recipients[0].Forced || got.Due.After(f.clk.Now()) {
			t.Errorf("after a crash %s is %v due %v forced %v; want incoming, due now, forced", m.ID, got.State, got.Due, got.Recipients[0].Forced)
		}
	}
}

// TestFlushRunLeasesSharedMessage: a message for two sub-domains of a
// sub-tree flush and for another destination is reached at two keys of
// the flush index: NextLeased leases it once (in the save that expedites
// it), forces the flushed destinations' recipients only, and leaves the
// other one's schedule; a crash returns it due now with that schedule
// kept. A message expedited by a flush that had no slot is leased by the
// next flush, which finds nothing to change.
func TestFlushRunLeasesSharedMessage(t *testing.T) {
	f := open(t)
	later := f.clk.Now().Add(24 * time.Hour)
	m := newMsg("u@a.big.tld", "v@b.big.tld", "w@other.tld")
	for i := range m.Recipients {
		m.Recipients[i].NextAttempt = later
	}
	if err := f.s.Enqueue(m, []byte("Subject: x\r\n\r\nbody\r\n")); err != nil {
		t.Fatal(err)
	}
	r := f.s.NewFlushRun("big.tld", true)
	res, leased, err := r.NextLeased(10)
	if err != nil {
		t.Fatal(err)
	}
	f.check()
	if res.Messages != 1 || len(leased) != 1 || leased[0].ID != m.ID || !r.Done() {
		t.Fatalf("NextLeased: %+v, %d leased, done %v; want the message counted and leased once", res, len(leased), r.Done())
	}
	got := f.get(m.ID)
	rc := got.Recipients
	if got.State != StateActive || !rc[0].Forced || !rc[1].Forced || rc[2].Forced || !rc[2].NextAttempt.Equal(later) {
		t.Fatalf("stored %v, forced %v %v %v, other.tld next %v; want active, big.tld's forced, other.tld's at %v",
			got.State, rc[0].Forced, rc[1].Forced, rc[2].Forced, rc[2].NextAttempt, later)
	}
	if st := f.stats(); st.Active != 1 || st.Incoming+st.Deferred != 0 {
		t.Errorf("stats %+v; want 1 active", st)
	}
	f.crash()
	f.check()
	got = f.get(m.ID)
	if rc := got.Recipients; got.State != StateIncoming || got.Due.After(f.clk.Now()) || rc[2].Forced || !rc[2].NextAttempt.Equal(later) {
		t.Fatalf("after a crash: %v due %v, other.tld forced %v next %v; want incoming, due now, other.tld at its schedule",
			got.State, got.Due, rc[2].Forced, rc[2].NextAttempt)
	}

	// No slot: expedited, not leased; the next flush leases it.
	n := newMsg("x@big.tld")
	n.Recipients[0].NextAttempt = later
	if err := f.s.Enqueue(n, []byte("Subject: y\r\n\r\nbody\r\n")); err != nil {
		t.Fatal(err)
	}
	if _, leased, err := f.s.NewFlushRun("big.tld", false).NextLeased(0); err != nil || len(leased) != 0 {
		t.Fatalf("NextLeased(0): %d leased, %v", len(leased), err)
	}
	f.check()
	if got := f.get(n.ID); got.State != StateIncoming || got.Due.After(f.clk.Now()) {
		t.Fatalf("after NextLeased(0): %v due %v; want incoming, due now", got.State, got.Due)
	}
	_, leased, err = f.s.NewFlushRun("big.tld", false).NextLeased(1)
	if err != nil || len(leased) != 1 || leased[0].ID != n.ID {
		t.Fatalf("NextLeased(1) after NextLeased(0): %v, %v", leased, err)
	}
	f.check()
	if got := f.get(n.ID); got.State != StateActive {
		t.Fatalf("stored %v; want active", got.State)
	}
}
