package store

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// openJournaled opens f's store with fsync and a journal of size bytes
// whose applier waits until release is called (also at the end of the
// test, so that a failing test does not hang in Close).
func (f *fixture) openJournaled(size int64) (release func()) {
	f.t.Helper()
	hold := make(chan struct{})
	release = sync.OnceFunc(func() { close(hold) })
	f.t.Cleanup(release)
	f.o.NoSync, f.o.JournalSize, f.o.journalHold = false, size, hold
	f.reopen()
	if f.s.j == nil {
		f.t.Fatal("no journal")
	}
	return release
}

// salvageInPlace salvages the (killed) store's file, puts the salvaged
// file in its place beside the same journal and reopens it, which must
// then replay nothing: salvage took the journal's messages already. It
// returns Salvage's report and error; on an error nothing is moved.
func (f *fixture) salvageInPlace() (SalvageReport, error) {
	f.t.Helper()
	out := f.path + ".salvaged"
	rep, err := Salvage(f.path, out, Options{Eligible: eligibleTLD, PolicyKey: "tld"})
	if err != nil {
		return rep, err
	}
	if err := os.Rename(out, f.path); err != nil {
		f.t.Fatal(err)
	}
	f.reopen()
	if r := f.s.Report(); r.Replayed != 0 {
		f.t.Fatalf("salvaged file replayed %d", r.Replayed)
	}
	return rep, nil
}

// spoolN queues n messages of size bytes of content to a@x.tld through
// Spool.Enqueue and returns their IDs.
func (f *fixture) spoolN(n, size int) []ID {
	f.t.Helper()
	ids := make([]ID, n)
	for i := range ids {
		m := newMsg("a@x.tld")
		f.spool(m, size)
		ids[i] = m.ID
	}
	return ids
}

// spool queues a message of n bytes of content through Spool.Enqueue.
func (f *fixture) spool(m *Message, n int) []byte {
	f.t.Helper()
	m.ID = NewID()
	c, err := f.s.Spool(m.ID)
	if err != nil {
		f.t.Fatal(err)
	}
	body := content(n)
	c.Write(body)
	if err := c.Enqueue(m); err != nil {
		f.t.Fatal(err)
	}
	return body
}

// kill leaves the store as a killed process would: the files as they
// are, nothing applied or closed by the store.
func (f *fixture) kill() {
	f.t.Helper()
	f.s.closed.Store(true)
	f.s.j.log.Close()
	f.s.db.Close()
	f.s.closeFile()
	f.o.journalHold = nil
}

// TestJournalReplay: messages acknowledged through the journal and not
// yet applied when the process dies are in the file after the next Open,
// whole, before anything reads it; one acknowledged as leased (journaled
// with its lease) comes back incoming (recoverLeases); a second Open
// replays nothing.
func TestJournalReplay(t *testing.T) {
	f := open(t)
	f.openJournaled(1 << 20)
	bodies := map[ID][]byte{}
	for i := 0; i < 20; i++ {
		m := newMsg("a@x.tld", "b@y.example")
		switch i % 5 {
		case 1:
			m.State = StateActive // leased at acceptance: journaled leased
		case 2:
			m.State = StateHold
		}
		b := f.spool(m, 100+i*50)
		bodies[m.ID] = b
	}
	if a, l := f.s.j.applied.Load(), f.s.j.last.Load(); a != 0 || l != 20 {
		t.Fatalf("before the crash: applied %d, journaled %d; want 0, 20", a, l)
	}
	f.kill()
	f.reopen()
	r := f.s.Report()
	if r.Replayed != 20 || r.Recovered != 4 {
		t.Fatalf("Open: replayed %d, recovered %d; want 20, 4", r.Replayed, r.Recovered)
	}
	for id, want := range bodies {
		if b, err := f.s.Body(id); err != nil || !bytes.Equal(b, want) {
			t.Fatalf("%s after replay: %v (intact: %v)", id, err, bytes.Equal(b, want))
		}
	}
	if st := f.stats(); st.Hold != 4 || st.Incoming != 16 || st.Active != 0 {
		t.Fatalf("stats after replay: %+v", st)
	}
	f.check()
	f.reopen()
	if r := f.s.Report(); r.Replayed != 0 {
		t.Fatalf("second Open replayed %d", r.Replayed)
	}
}

// TestJournalFence: what Spool.Enqueue acknowledged through the journal
// is seen by the next read, lease or flush even while the applier has
// not run: a read waits for it, a lease files it in its own transaction
// (and does not wait). Close applies what is pending.
func TestJournalFence(t *testing.T) {
	f := open(t)
	release := f.openJournaled(1 << 20)
	m := newMsg("a@x.tld")
	f.spool(m, 1000)
	got := make(chan error, 1)
	go func() {
		_, err := f.s.Get(m.ID)
		got <- err
	}()
	f.awaitFence()
	ms, err := f.s.Lease(f.clk.Now(), 10) // the applier still held
	if err != nil || len(ms) != 1 || ms[0].ID != m.ID {
		t.Fatalf("lease did not find the message: %d, %v", len(ms), err)
	}
	if err := <-got; err != nil {
		t.Fatal(err)
	}
	release()
	// Close applies what is pending.
	m2 := newMsg("b@x.tld")
	f.spool(m2, 500)
	f.s.Close()
	f.o.journalHold = nil
	f.reopen()
	if r := f.s.Report(); r.Replayed != 0 {
		t.Fatalf("Open after Close replayed %d", r.Replayed)
	}
	f.get(m2.ID)
}

// TestJournalFull: when the journal has no room (its halves hold records
// not applied yet), Spool.Enqueue commits to the file directly.
func TestJournalFull(t *testing.T) {
	f := open(t)
	release := f.openJournaled(16 << 10)
	var ids []ID
	for i := 0; i < 8; i++ {
		m := newMsg("a@x.tld")
		f.spool(m, 3000)
		ids = append(ids, m.ID)
	}
	if n := f.s.j.last.Load(); n == 0 || n >= 8 {
		t.Fatalf("%d of 8 journaled; want some, not all", n)
	}
	release()
	for _, id := range ids {
		f.get(id)
	}
	f.check()
}

// TestSalvageJournal: salvage copies the messages of the damaged file's
// journal that the file lacks, and the salvaged file, put in its place
// next to that journal, replays none of them again.
func TestSalvageJournal(t *testing.T) {
	f := open(t)
	f.openJournaled(1 << 20)
	var ids []ID
	for i := 0; i < 5; i++ {
		m := newMsg("a@x.tld")
		f.spool(m, 700)
		ids = append(ids, m.ID)
	}
	f.kill()
	rep, err := f.salvageInPlace()
	if err != nil || rep.Journaled != 5 || rep.Recovered != 5 || rep.JournalErr != nil {
		t.Fatalf("Salvage: %+v, %v", rep, err)
	}
	for _, id := range ids {
		if b, err := f.s.Body(id); err != nil || !bytes.Equal(b, content(700)) {
			t.Fatalf("%s: %v", id, err)
		}
	}
	f.check()
}

// TestJournalPiggyback: while its record waits for the applier, a
// message's content is read from memory, and a write (here Hold) files
// the pending records in its own transaction instead of waiting for the
// applier.
func TestJournalPiggyback(t *testing.T) {
	f := open(t)
	f.openJournaled(1 << 20) // the applier never runs before the end
	m := newMsg("a@x.tld", "b@y.example")
	body := f.spool(m, 900)
	if b, err := f.s.Body(m.ID); err != nil || !bytes.Equal(b, body) {
		t.Fatalf("Body from the journal: %v", err)
	}
	if h, err := f.s.BodyHead(m.ID, 10); err != nil || !bytes.Equal(h, body[:10]) {
		t.Fatalf("BodyHead from the journal: %q, %v", h, err)
	}
	other := newMsg("c@x.tld")
	f.spool(other, 300)
	if n, err := f.s.Hold(m.ID); err != nil || n != 1 {
		t.Fatalf("Hold: %d, %v", n, err)
	}
	if a, l := f.s.j.applied.Load(), f.s.j.last.Load(); a != l {
		t.Fatalf("after Hold: applied %d of %d", a, l)
	}
	if got := f.get(m.ID); got.State != StateHold {
		t.Fatalf("after Hold: %s", got.State)
	}
	f.get(other.ID)
	f.check()
	f.kill()
	f.reopen()
	if r := f.s.Report(); r.Replayed != 0 {
		t.Fatalf("replayed %d after the piggybacked apply", r.Replayed)
	}
	f.check()
}

// TestJournalApplyFails: records the applier cannot file (full disk, a
// damaged page) stay pending and journaled; the failure is reported
// (OnJournal); reads and writes go on without them, so that the rest of
// the queue is still delivered and its outcomes recorded; a backup, which
// would miss them, is refused; and the applier tries again until it
// succeeds.
func TestJournalApplyFails(t *testing.T) {
	f := open(t)
	var failing atomic.Bool
	failing.Store(true)
	var reported atomic.Int32
	f.o.journalFault = func() error {
		if failing.Load() {
			return fmt.Errorf("%w: test", ErrNoSpace)
		}
		return nil
	}
	f.o.OnJournal = func(error) { reported.Add(1) }
	f.openJournaled(1 << 20)()
	old := newMsg("b@x.tld")
	if err := f.s.Enqueue(old, []byte("queued before\r\n")); err != nil {
		t.Fatal(err)
	}
	m := newMsg("a@x.tld")
	f.spool(m, 500)
	// The first read finds the apply failing; it neither waits for the
	// record nor fails: the rest of the queue keeps working.
	if _, err := f.s.Get(m.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get while the apply fails: %v, want ErrNotFound", err)
	}
	deadline := time.Now().Add(10 * journalRetry)
	for reported.Load() == 0 { // reported after the error is set
		if time.Now().After(deadline) {
			t.Fatal("the failed apply was not reported")
		}
		time.Sleep(time.Millisecond)
	}
	if _, err := f.s.Get(old.ID); err != nil {
		t.Fatalf("Get of a filed message while the apply fails: %v", err)
	}
	if n, err := f.s.Delete(old.ID); err != nil || n != 1 {
		t.Fatalf("a write while the apply fails: %d, %v", n, err)
	}
	if _, err := f.s.Backup(io.Discard); !errors.Is(err, ErrNoSpace) {
		t.Fatalf("Backup while the apply fails: %v, want ErrNoSpace (it would miss acknowledged mail)", err)
	}
	failing.Store(false)
	for {
		_, err := f.s.Get(m.ID)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Get after the fault cleared: %v", err)
		}
		time.Sleep(10 * time.Millisecond) // the applier retries on its timer
	}
	f.check()
}

// TestJournalReplayKnownID: a journal record whose message the file
// already holds (a journal append that failed after its write, the
// message then committed directly under the same ID) is not filed a
// second time under a new ID at the next Open: that would deliver it
// twice. A record whose ID the file holds for another message still
// gets a new ID rather than be lost.
func TestJournalReplayKnownID(t *testing.T) {
	f := open(t)
	f.openJournaled(1 << 20)
	m := newMsg("a@x.tld")
	body := f.spool(m, 600)
	other := newMsg("c@x.tld")
	f.spool(other, 400)
	f.s.j.mu.Lock()
	same := clone(f.s.j.byID[m.ID].m)
	clash := clone(f.s.j.byID[other.ID].m)
	f.s.j.mu.Unlock()
	clash.Arrival, clash.Size = clash.Arrival.Add(-time.Hour), 10 // another message, same ID
	err := f.s.dbUpdate(func(tx *bolt.Tx) error {
		w := f.s.begin(tx)
		if err := w.insert(same, body); err != nil {
			return err
		}
		if err := w.insert(clash, content(10)); err != nil {
			return err
		}
		return w.commit()
	})
	if err != nil {
		t.Fatal(err)
	}
	f.kill()
	f.reopen()
	if r := f.s.Report(); r.Replayed != 2 {
		t.Fatalf("replayed %d, want 2", r.Replayed)
	}
	if st := f.stats(); st.Incoming != 3 {
		t.Fatalf("after replay: %d incoming, want 3 (the message known already once, the clashing one twice)", st.Incoming)
	}
	if b, err := f.s.Body(m.ID); err != nil || !bytes.Equal(b, body) {
		t.Fatalf("%s: %v", m.ID, err)
	}
	f.check()
}

// TestSalvageJournalMetaLost: when the damage takes the page holding
// journal-applied (here the root page, where bucket meta lives), salvage
// still copies the journal's messages that the file lacks, although the
// journal's first records were released and overwritten long ago (its
// records then do not follow 0), and the salvaged file, put in place
// next to that journal, opens.
func TestSalvageJournalMetaLost(t *testing.T) {
	f := open(t)
	f.openJournaled(16 << 10) // halves of 8 KiB: two records of 3000 bytes each
	var ids []ID
	spool := func(n int) { ids = append(ids, f.spoolN(n, 3000)...) }
	file := func() { // a write files the pending records (piggyback)
		if _, err := f.s.Hold(ids[0]); err != nil {
			t.Fatal(err)
		}
	}
	for range 60 { // records and bodies on pages of their own, not in the root page
		if err := f.s.Enqueue(newMsg("f@x.tld"), content(300)); err != nil {
			t.Fatal(err)
		}
	}
	spool(2) // records 1, 2 in the first half
	file()
	spool(2) // 3, 4 in the second
	file()
	spool(2) // 5, 6 over 1, 2 in the first: acknowledged, not filed
	if a, l := f.s.j.applied.Load(), f.s.j.last.Load(); a != 4 || l != 6 {
		t.Fatalf("applied %d of %d; want 4 of 6", a, l)
	}
	f.kill()
	d := &damageFixture{path: f.path, o: Options{Eligible: eligibleTLD, PolicyKey: "tld"}}
	d.layout(t)
	d.garble(t, append([]uint64{d.root}, d.leaf["meta"]...)...)
	rep, s := d.salvage(t)
	if rep.JournalErr != nil || rep.Journaled < 2 {
		t.Fatalf("salvage: %d from the journal, %v; want 5 and 6 at least", rep.Journaled, rep.JournalErr)
	}
	for _, id := range ids {
		if _, err := s.Get(id); err != nil {
			t.Errorf("%s after salvage: %v", id, err)
		}
	}
	s.Close()
	if err := os.Rename(f.path+".salvaged", f.path); err != nil {
		t.Fatal(err)
	}
	f.reopen()
	if r := f.s.Report(); r.Replayed != 0 {
		t.Fatalf("salvaged file replayed %d", r.Replayed)
	}
}

// TestJournalGap: a journal damaged so that its records after
// journal-applied have a hole (here the second record of the second half
// garbled: records 3, 5 and 6 readable, 4 not) makes Open fail with ErrDamaged, which the daemon reports as
// a damaged queue pointing at salvage; salvage copies the records before
// and after the hole, counts the missing ones, and the salvaged file opens next to
// that journal.
func TestJournalGap(t *testing.T) {
	f := open(t)
	f.openJournaled(16 << 10) // halves of 8 KiB: two records of 3000 bytes each
	var ids []ID
	spool := func(n int) { ids = append(ids, f.spoolN(n, 3000)...) }
	spool(2) // records 1, 2 in the first half, then filed by Hold
	if _, err := f.s.Hold(ids[0]); err != nil {
		t.Fatal(err)
	}
	spool(4) // 3, 4 in the second half, 5, 6 over 1, 2 in the first
	if a, l := f.s.j.applied.Load(), f.s.j.last.Load(); a != 2 || l != 6 {
		t.Fatalf("applied %d of %d; want 2 of 6", a, l)
	}
	f.kill()
	jf, err := os.OpenFile(f.path+".journal", os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := jf.WriteAt(bytes.Repeat([]byte{0xa5}, 64), 8<<10+4000); err != nil { // record 4's data
		t.Fatal(err)
	}
	jf.Close()
	if _, err := Open(f.path, f.o); !errors.Is(err, ErrDamaged) {
		t.Fatalf("Open with a hole in the journal: %v; want ErrDamaged", err)
	}
	rep, err := f.salvageInPlace()
	if err != nil || rep.JournalErr != nil || rep.Journaled != 3 || rep.JournalMissing != 1 {
		t.Fatalf("Salvage: %d from the journal, %d missing, %v, %v; want 3 (3, 5, 6), 1 (4)", rep.Journaled, rep.JournalMissing, rep.JournalErr, err)
	}
	for i, id := range ids {
		if _, err := f.s.Get(id); (err == nil) != (i != 3) {
			t.Errorf("message %d after salvage: %v", i+1, err)
		}
	}
	f.check()
}

// TestJournalCloseUnderLoad: Close while sessions enqueue through the
// journal files every message acknowledged before it (nothing left for
// the next Open to replay) and refuses the later ones; nothing
// acknowledged is missing after the reopen.
func TestJournalCloseUnderLoad(t *testing.T) {
	f := open(t)
	f.o.NoSync, f.o.JournalSize = false, 1<<20
	f.reopen()
	s := f.s
	var mu sync.Mutex
	var acked []ID
	var wg sync.WaitGroup
	many := make(chan struct{})
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				m := newMsg("a@x.tld")
				m.ID = NewID()
				c, err := s.Spool(m.ID)
				if err != nil {
					return
				}
				c.Write(content(300))
				if err := c.Enqueue(m); err != nil {
					if !errors.Is(err, ErrClosed) {
						t.Errorf("Enqueue: %v", err)
					}
					return
				}
				mu.Lock()
				acked = append(acked, m.ID)
				n := len(acked)
				mu.Unlock()
				if n == 40 {
					close(many)
				}
			}
		}()
	}
	<-many
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	f.o.JournalSize = 1 << 20
	f.reopen()
	if r := f.s.Report(); r.Replayed != 0 {
		t.Errorf("Open after Close replayed %d", r.Replayed)
	}
	for _, id := range acked {
		if _, err := f.s.Get(id); err != nil {
			t.Fatalf("acknowledged %s: %v", id, err)
		}
	}
	t.Logf("%d acknowledged", len(acked))
	f.check()
}

// TestJournalOwner: a journal made by a process running as root (a
// `holdfast queue` command on a queue that has none yet) belongs to the
// queue file's owner, so that the daemon's user can open it.
func TestJournalOwner(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	f := open(t)
	f.o.NoSync, f.o.JournalSize = false, -1 // no journal yet
	f.reopen()
	f.s.Close()
	if err := os.Chown(f.path, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	f.o.JournalSize = 64 << 10
	f.reopen()
	var st syscall.Stat_t
	if err := syscall.Stat(f.path+".journal", &st); err != nil {
		t.Fatal(err)
	}
	if st.Uid != 65534 || st.Gid != 65534 || st.Mode&0o777 != 0o600 {
		t.Fatalf("journal owned by %d:%d, mode %o; want 65534:65534, 600", st.Uid, st.Gid, st.Mode&0o777)
	}
}

// TestJournalTooBig: a message whose record is larger than half the
// journal commits directly, and the journal keeps taking the next ones
// (a record too big is no failure of the journal).
func TestJournalTooBig(t *testing.T) {
	f := open(t)
	release := f.openJournaled(16 << 10)
	big := newMsg("a@x.tld")
	f.spool(big, 9000)
	small := newMsg("b@x.tld")
	f.spool(small, 300)
	if l := f.s.j.last.Load(); l != 1 {
		t.Fatalf("journaled %d; want 1 (the small message)", l)
	}
	release()
	f.get(big.ID)
	f.get(small.ID)
}

// TestJournalBackupRestore: a backup taken while messages wait in the
// journal holds them (Backup waits for them); put back in place of the
// queue file with the journal of the running queue still beside it, it
// opens with every message acknowledged before the backup once and the
// ones acknowledged after it replayed from the journal: nothing lost,
// nothing doubled.
func TestJournalBackupRestore(t *testing.T) {
	f := open(t)
	release := f.openJournaled(1 << 20)
	var ids []ID
	spool := func(n int) { ids = append(ids, f.spoolN(n, 500)...) }
	spool(3) // journaled, not filed: the applier is held
	var buf bytes.Buffer
	done := make(chan error, 1)
	go func() {
		_, err := f.s.Backup(&buf)
		done <- err
	}()
	f.awaitFence() // the backup waits for the three
	release()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	spool(2) // after the backup
	f.kill()
	if err := os.WriteFile(f.path, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	f.reopen()
	if st := f.stats(); st.Incoming != 5 {
		t.Fatalf("restored backup: %d incoming; want 5 (3 in it, 2 from the journal)", st.Incoming)
	}
	for _, id := range ids {
		f.get(id)
	}
	f.check()
}

// TestJournalFinishUnfiled: a message leased at acceptance is journaled
// with its lease; Lease neither waits for it nor files it, its content
// is read from memory, and a Finish that delivers it before the applier
// files it ends it with no commit: the applier skips its record. Killed
// before the next filing commit, the store files it at Open, active, and
// returns it to the queue (delivered again: reliability row 2). A Finish
// that leaves a recipient pending files it in its own transaction.
func TestJournalFinishUnfiled(t *testing.T) {
	f := open(t)
	f.openJournaled(1 << 20) // the applier held until the kill
	leased := func() (*Message, []byte) {
		m := newMsg("a@x.tld", "b@y.example")
		m.State = StateActive
		body := f.spool(m, 700)
		if m.State != StateActive {
			t.Fatalf("spooled leased: %s", m.State)
		}
		return m, body
	}
	m, body := leased()
	if ms, err := f.s.Lease(f.clk.Now(), 10); err != nil || len(ms) != 0 {
		t.Fatalf("Lease: %d, %v; want none, no wait", len(ms), err)
	}
	if _, ok, err := f.s.NextDue(); err != nil || ok {
		t.Fatalf("NextDue: %v, %v", ok, err)
	}
	if b, err := f.s.Body(m.ID); err != nil || !bytes.Equal(b, body) {
		t.Fatalf("Body from the journal: %v", err)
	}
	delivered := Finish{Outcomes: []Outcome{{Rcpt: 0, Result: RcptDelivered}, {Rcpt: 1, Result: RcptDelivered}}}
	if err := f.s.Finish(m.ID, delivered); err != nil {
		t.Fatal(err)
	}
	// One left pending: filed with the outcome, in Finish's transaction.
	m2, _ := leased()
	if err := f.s.Finish(m2.ID, Finish{Outcomes: []Outcome{{Rcpt: 0, Result: RcptDelivered}}}); err != nil {
		t.Fatal(err)
	}
	if a, l := f.s.j.applied.Load(), f.s.j.last.Load(); a != l {
		t.Fatalf("after the second Finish: applied %d of %d", a, l)
	}
	if _, err := f.s.Get(m.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("the delivered message: %v, want ErrNotFound", err)
	}
	if got := f.get(m2.ID); got.State != StateIncoming || got.Recipients[0].State != RcptDelivered {
		t.Fatalf("the message left pending: %s, %v", got.State, got.Recipients[0].State)
	}
	f.check()
	// Ended unfiled, then killed before any filing commit.
	m3, _ := leased()
	if err := f.s.Finish(m3.ID, delivered); err != nil {
		t.Fatal(err)
	}
	f.kill()
	f.reopen()
	if r := f.s.Report(); r.Replayed != 1 || r.Recovered != 1 {
		t.Fatalf("Open: replayed %d, recovered %d; want 1, 1", r.Replayed, r.Recovered)
	}
	if got := f.get(m3.ID); got.State != StateIncoming {
		t.Fatalf("the message ended unfiled, after the kill: %s", got.State)
	}
	f.check()
	// Ended unfiled, then the applier runs: skipped, nothing to replay.
	release := f.openJournaled(1 << 20)
	m4, _ := leased()
	if err := f.s.Finish(m4.ID, delivered); err != nil {
		t.Fatal(err)
	}
	release()
	f.s.Close()
	f.o.journalHold = nil
	f.reopen()
	if r := f.s.Report(); r.Replayed != 0 {
		t.Fatalf("Open after Close replayed %d", r.Replayed)
	}
	if _, err := f.s.Get(m4.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("the message ended unfiled, after Close: %v", err)
	}
	f.check()
}

// awaitFence returns once one operation waits in the journal's fence.
func (f *fixture) awaitFence() {
	for {
		f.s.j.mu.Lock()
		n := f.s.j.waiters
		f.s.j.mu.Unlock()
		if n == 1 {
			return
		}
		runtime.Gosched()
	}
}
