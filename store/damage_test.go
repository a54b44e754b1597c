package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"
)

// damageFixture is a closed queue file of n deferred messages (bodies of
// a few hundred bytes), and the layout of its pages.
type damageFixture struct {
	path  string
	o     Options
	ids   []ID
	psize uint64
	root  uint64
	// kind and bucket of every page reached from the root.
	branch, leaf map[string][]uint64
	// recordPage is the leaf page of bucket msg that holds each record.
	recordPage map[ID]uint64
}

func newDamageFixture(t *testing.T, n int) *damageFixture {
	t.Helper()
	f := &damageFixture{path: filepath.Join(t.TempDir(), "queue.db"),
		o: Options{Eligible: eligibleTLD, PolicyKey: "tld", NoSync: true}}
	s, err := Open(f.path, f.o)
	if err != nil {
		t.Fatal(err)
	}
	later := time.Now().Add(time.Hour)
	for i := range n {
		m := newMsg(fmt.Sprintf("u%d@customer.tld", i))
		m.Recipients[0].NextAttempt = later
		body := fmt.Sprintf("Subject: %d\r\n\r\n%0300d\r\n", i, i)
		if err := s.Enqueue(m, []byte(body)); err != nil {
			t.Fatal(err)
		}
		f.ids = append(f.ids, m.ID)
	}
	// One body of several chunks, each on pages of its own.
	big := newMsg("big@customer.tld")
	big.Recipients[0].NextAttempt = later
	if err := s.Enqueue(big, bigBody()); err != nil {
		t.Fatal(err)
	}
	f.ids = append(f.ids, big.ID)
	if _, err := s.Hold(f.ids[0]); err != nil {
		t.Fatal(err)
	}
	if err := s.Check(); err != nil {
		t.Fatal(err)
	}
	s.Close()
	f.layout(t)
	return f
}

func (f *damageFixture) layout(t *testing.T) {
	t.Helper()
	fh, err := os.Open(f.path)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	fi, _ := fh.Stat()
	w, err := openWalk(fh, fi.Size(), 10)
	if err != nil {
		t.Fatal(err)
	}
	w.walk()
	if len(w.problems) > 0 {
		t.Fatalf("fresh file: %v", w.problems)
	}
	f.psize, f.root = w.psize, w.root
	f.branch, f.leaf = map[string][]uint64{}, map[string][]uint64{}
	for id, b := range w.seen {
		hdr := make([]byte, 16)
		fh.ReadAt(hdr, int64(id*w.psize))
		if binary.LittleEndian.Uint64(hdr) != id {
			continue // overflow continuation
		}
		switch binary.LittleEndian.Uint16(hdr[8:]) {
		case pgBranch:
			f.branch[b] = append(f.branch[b], id)
		case pgLeaf:
			f.leaf[b] = append(f.leaf[b], id)
		}
	}
	for _, m := range []map[string][]uint64{f.branch, f.leaf} {
		for _, l := range m {
			slices.Sort(l)
		}
	}
	f.recordPage = map[ID]uint64{}
	for _, id := range f.leaf["msg"] {
		_, keys, _, _, _, ok := w.elems(id, "msg", w.readPage(id))
		if !ok {
			t.Fatalf("fresh file: leaf page %d of bucket msg: %v", id, w.problems)
		}
		for _, k := range keys {
			f.recordPage[ID(k)] = id
		}
	}
}

func bigBody() []byte {
	b := make([]byte, 2*BodyChunk+1000)
	for i := range b {
		b[i] = 'a' + byte(i%26)
	}
	return b
}

// garble overwrites whole pages with random bytes.
func (f *damageFixture) garble(t *testing.T, pages ...uint64) {
	t.Helper()
	fh, err := os.OpenFile(f.path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	rng := rand.New(rand.NewPCG(uint64(len(pages)), 7))
	junk := make([]byte, f.psize)
	for _, p := range pages {
		for i := range junk {
			junk[i] = byte(rng.Uint32())
		}
		if _, err := fh.WriteAt(junk, int64(p*f.psize)); err != nil {
			t.Fatal(err)
		}
	}
}

// salvage copies the damaged file and checks the copy.
func (f *damageFixture) salvage(t *testing.T) (SalvageReport, *Store) {
	t.Helper()
	dst := f.path + ".salvaged"
	rep, err := Salvage(f.path, dst, f.o)
	if err != nil {
		t.Fatalf("Salvage: %v", err)
	}
	s, err := Open(dst, f.o)
	if err != nil {
		t.Fatalf("open the salvaged file: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	if err := s.Check(); err != nil {
		t.Errorf("Check of the salvaged file: %v", err)
	}
	st, _ := s.Stats()
	if int(st.Incoming+st.Deferred+st.Hold) != rep.Recovered || st.Hold != int64(rep.Held) {
		t.Errorf("salvaged file holds %+v; report says %d recovered, %d held", st, rep.Recovered, rep.Held)
	}
	t.Logf("salvage: %d recovered (%d held), lost %d named %v + %d unnamed, %d pages read, damaged: %v",
		rep.Recovered, rep.Held, len(rep.Lost), rep.Lost, rep.LostUnnamed, rep.Pages, rep.Damaged)
	return rep, s
}

// TestDamagedRootPage: a garbled root page (the one listing the buckets)
// makes Open fail with a DamageError naming that page, without a panic;
// CheckPages names it; salvage recovers every message, since their
// records and bodies are on other pages.
func TestDamagedRootPage(t *testing.T) {
	f := newDamageFixture(t, 300)
	f.garble(t, f.root)
	_, err := Open(f.path, f.o)
	var de *DamageError
	if !errors.As(err, &de) || !errors.Is(err, ErrDamaged) {
		t.Fatalf("Open on a garbled root page: %v; want a DamageError", err)
	}
	if de.Page != f.root {
		t.Errorf("DamageError names page %d; the root is %d (%v)", de.Page, f.root, err)
	}
	t.Logf("Open: %v", err)
	probs, err := CheckPages(f.path, 10)
	if err != nil || len(probs) == 0 || probs[0].Page != f.root || probs[0].Bucket != "root" {
		t.Errorf("CheckPages = %v, %v; want page %d (bucket root)", probs, err, f.root)
	}
	rep, s := f.salvage(t)
	if rep.Recovered != len(f.ids) || rep.Held != 1 || len(rep.Lost) != 0 {
		t.Errorf("salvage recovered %d (%d held), lost %v; want all %d, 1 held", rep.Recovered, rep.Held, rep.Lost, len(f.ids))
	}
	body, err := s.Body(f.ids[7])
	if want := fmt.Sprintf("Subject: 7\r\n\r\n%0300d\r\n", 7); err != nil || string(body) != want {
		t.Errorf("salvaged body of message 7: %q, %v", body, err)
	}
	if body, err := s.Body(f.ids[len(f.ids)-1]); err != nil || string(body) != string(bigBody()) {
		t.Errorf("salvaged body of %d bytes in 3 chunks: %d bytes, %v", len(bigBody()), len(body), err)
	}
}

// TestDamagedBranchPage: a garbled branch page of bucket msg lets Open
// succeed (it does not read it) but every operation that reaches it gets
// a DamageError, never a panic; Check names the page and the bucket;
// salvage recovers every message.
func TestDamagedBranchPage(t *testing.T) {
	f := newDamageFixture(t, 300)
	if len(f.branch["msg"]) == 0 {
		t.Fatalf("no branch page in bucket msg: %v", f.branch)
	}
	page := f.branch["msg"][0]
	f.garble(t, page)
	s, err := Open(f.path, f.o)
	if err != nil {
		if !errors.Is(err, ErrDamaged) {
			t.Fatalf("Open: %v", err)
		}
		t.Logf("Open: %v", err)
	} else {
		_, lerr := s.Lease(time.Now().Add(2*time.Hour), 1000)
		_, ferr := s.Flush("customer.tld", false)
		_, gerr := s.Get(f.ids[5])
		cerr := s.Check()
		for _, e := range []error{lerr, ferr, gerr} {
			if e != nil && !errors.Is(e, ErrDamaged) {
				t.Errorf("operation on a damaged branch: %v; want nil or ErrDamaged", e)
			}
		}
		var de *DamageError
		if !errors.As(cerr, &de) || de.Page != page || de.Bucket != "msg" {
			t.Errorf("Check: %v; want page %d (bucket msg)", cerr, page)
		}
		t.Logf("Lease: %v\nGet: %v\nCheck: %v", lerr, gerr, cerr)
		s.Close()
	}
	rep, _ := f.salvage(t)
	if rep.Recovered != len(f.ids) {
		t.Errorf("salvage recovered %d of %d", rep.Recovered, len(f.ids))
	}
}

// TestScatteredLeafDamage: three garbled leaf pages of bucket msg. The
// store opens; Lease and Flush skip the messages whose records are gone,
// name each once to OnDamaged and hand out all the others; salvage
// recovers the others and lists the lost ones by ID (from the due index).
// Lease takes fewer messages than a damaged page held, so it must walk
// past the unreadable ones.
func TestScatteredLeafDamage(t *testing.T) {
	f := newDamageFixture(t, 300)
	leaves := f.leaf["msg"]
	if len(leaves) < 8 {
		t.Fatalf("only %d leaf pages in bucket msg", len(leaves))
	}
	f.garble(t, leaves[1], leaves[4], leaves[7])
	var mu sync.Mutex
	reported := map[ID]error{}
	o := f.o
	o.OnDamaged = func(id ID, err error) {
		mu.Lock()
		defer mu.Unlock()
		if _, dup := reported[id]; dup {
			t.Errorf("%s reported twice", id)
		}
		reported[id] = err
	}
	s, err := Open(f.path, o)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	res, err := s.Flush("customer.tld", false)
	if err != nil {
		t.Fatalf("Flush: %v", err)
	}
	leased := 0
	for {
		ms, err := s.Lease(time.Now().Add(2*time.Hour), 10) // fewer than one damaged page holds
		if err != nil {
			t.Fatalf("Lease: %v", err)
		}
		if len(ms) == 0 {
			break
		}
		leased += len(ms)
	}
	s.Close()
	mu.Lock()
	lost := len(reported)
	for id, err := range reported {
		if !errors.Is(err, ErrDamaged) {
			t.Errorf("%s reported with %v", id, err)
		}
	}
	mu.Unlock()
	t.Logf("flushed %d, leased %d, %d reported damaged", res.Messages, leased, lost)
	// The held message is not leased; it is reported when its page is
	// one of the garbled (Open reads the held messages).
	want := len(f.ids) - 1
	if _, held := reported[f.ids[0]]; held {
		want++
	}
	if lost == 0 || leased+lost != want {
		t.Errorf("leased %d + damaged %d != %d", leased, lost, want)
	}
	rep, _ := f.salvage(t)
	if rep.Recovered+len(rep.Lost) != len(f.ids) {
		t.Errorf("salvage: %d recovered + %d lost != %d", rep.Recovered, len(rep.Lost), len(f.ids))
	}
	for id := range reported {
		if !slices.Contains(rep.Lost, id) {
			t.Errorf("%s was reported damaged but is not in the salvage's lost list", id)
		}
	}
}

// TestWildPageNumber: a branch element pointing far beyond the file makes
// bbolt read outside its mapping, a memory fault that would kill the
// process; under guard it is a DamageError like any other damage.
func TestWildPageNumber(t *testing.T) {
	f := newDamageFixture(t, 300)
	page := f.branch["msg"][0]
	fh, err := os.OpenFile(f.path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 { // the children of the first three elements
		var pgid [8]byte
		binary.LittleEndian.PutUint64(pgid[:], 1<<34+uint64(i))
		if _, err := fh.WriteAt(pgid[:], int64(page*f.psize)+boltPageHeader+int64(i)*pgElemSize+8); err != nil {
			t.Fatal(err)
		}
	}
	fh.Close()
	s, err := Open(f.path, f.o)
	if err != nil {
		if !errors.Is(err, ErrDamaged) {
			t.Fatalf("Open: %v", err)
		}
		t.Logf("Open: %v", err)
		return
	}
	defer s.Close()
	_, gerr := s.Get(f.ids[1])
	_, lerr := s.Lease(time.Now().Add(2*time.Hour), 1000)
	if !errors.Is(gerr, ErrDamaged) {
		t.Errorf("Get under a wild page number: %v; want ErrDamaged", gerr)
	}
	t.Logf("Get: %v\nLease: %v\nCheck: %v", gerr, lerr, s.Check())
}

// TestFinishNextToDamage: deliveries of messages whose records share the
// tree with garbled leaf pages are all recorded (bbolt cannot delete a
// record next to a damaged page; Finish then retires it in place), so
// that salvage copies none of them again: no message is sent twice.
// The garbled leaves are three that do not hold the held message's
// record, which salvage must then recover; which page holds which
// record varies from run to run (IDs drawn within one millisecond are
// not in key order, so bbolt's splits differ), so they are chosen by
// what they hold, not by their place in the file.
func TestFinishNextToDamage(t *testing.T) {
	f := newDamageFixture(t, 300)
	held := f.ids[0]
	var leaves []uint64
	for _, p := range f.leaf["msg"] {
		if p != f.recordPage[held] {
			leaves = append(leaves, p)
		}
	}
	if len(leaves) < 8 {
		t.Fatalf("only %d leaf pages in bucket msg besides the held message's", len(leaves))
	}
	garbled := []uint64{leaves[1], leaves[4], leaves[7]}
	f.garble(t, garbled...)
	var onGarbled []ID
	for _, id := range f.ids {
		if slices.Contains(garbled, f.recordPage[id]) {
			onGarbled = append(onGarbled, id)
		}
	}
	s, err := Open(f.path, f.o)
	if err != nil {
		t.Fatal(err)
	}
	delivered, failed := 0, 0
	for {
		ms, err := s.Lease(time.Now().Add(2*time.Hour), 50)
		if err != nil {
			t.Fatal(err)
		}
		if len(ms) == 0 {
			break
		}
		for _, m := range ms {
			if err := s.Finish(m.ID, Finish{Outcomes: []Outcome{{Rcpt: 0, Result: RcptDelivered}}}); err != nil {
				t.Errorf("Finish %s: %v", m.ID, err)
				failed++
				continue
			}
			delivered++
		}
	}
	st, _ := s.Stats()
	s.Close()
	t.Logf("delivered %d, failed %d, left %+v", delivered, failed, st)
	if st.Active != 0 || st.Incoming != 0 || failed != 0 {
		t.Errorf("left in the queue: %+v, %d Finish failures; want only the held message and the unreadable ones (deferred)", st, failed)
	}
	rep, _ := f.salvage(t)
	if rep.Recovered != 1 || rep.Held != 1 {
		t.Errorf("salvage recovered %d (%d held); want only the held message: the delivered ones would be sent twice", rep.Recovered, rep.Held)
	}
	lost := slices.Clone(rep.Lost)
	slices.Sort(lost)
	slices.Sort(onGarbled)
	if !slices.Equal(lost, onGarbled) {
		t.Errorf("salvage names %d lost; want the %d whose records were on the garbled pages %v", len(lost), len(onGarbled), garbled)
	}
}
