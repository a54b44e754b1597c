package store

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// A queue written before destinations were A-labels (schema 2): mail for
// u@café.test indexed under "café.test" and a dead-list entry for
// etrn-only:café.test. The file is made as the old binary left it — a
// queue written now, with its IDN keys put back in their old U-label form
// and the schema set back to 2. Opening it runs migration 0003: the index
// agrees with the records again (Check), both names of the destination
// flush the message, and the dead-list entry is found under its A-label.
func TestIDNMigration(t *testing.T) {
	f := open(t)
	f.o.Eligible = func(d string) bool { return d == "xn--caf-dma.test" || eligibleTLD(d) }
	f.reopen()
	id := f.enqueue("u@café.test", "v@customer.tld")
	dead := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	if err := f.s.PutDest("etrn-only:xn--caf-dma.test", DestState{DeadUntil: dead, Reason: "down"}); err != nil {
		t.Fatal(err)
	}
	// Back to the old form.
	err := f.s.db.Update(func(tx *boltTx) error {
		fb, db := tx.Bucket(bktFlush), tx.Bucket(bktDest)
		if err := fb.Delete(flushKey("xn--caf-dma.test", id)); err != nil {
			return err
		}
		if err := fb.Put([]byte("test.café\x00"+string(id)), nil); err != nil {
			return err
		}
		v := append([]byte(nil), db.Get([]byte("etrn-only:xn--caf-dma.test"))...)
		if err := db.Delete([]byte("etrn-only:xn--caf-dma.test")); err != nil {
			return err
		}
		if err := db.Put([]byte("etrn-only:café.test"), v); err != nil {
			return err
		}
		var b [8]byte
		binary.BigEndian.PutUint64(b[:], 2)
		return tx.Bucket(bktMeta).Put([]byte("schema"), b[:])
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.s.Check(); err == nil {
		t.Fatal("Check passed on the old-form index: the test does not make the old form")
	}

	f.reopen()
	if r := f.s.Report(); r.SchemaFrom != 2 || r.SchemaTo < 3 || r.Rebuilt {
		t.Fatalf("Report = %+v, want a migration from schema 2 and no rebuild", r)
	}
	f.check()
	want := []string{"customer.tld " + string(id), "xn--caf-dma.test " + string(id)}
	got := f.flushKeys()
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Fatalf("flush index %q, want %q", got, want)
	}
	for _, name := range []string{"café.test", "xn--caf-dma.test", "CAFÉ.test."} {
		res, err := f.s.Flush(name, false)
		if err != nil || res.Messages != 1 {
			t.Errorf("Flush(%q) = %+v, %v; want 1 message", name, res, err)
		}
	}
	dests, err := f.s.Dests()
	if err != nil {
		t.Fatal(err)
	}
	if d, ok := dests["etrn-only:xn--caf-dma.test"]; !ok || !d.DeadUntil.Equal(dead) || len(dests) != 1 {
		t.Fatalf("Dests = %+v", dests)
	}
}

// The same on a file written by the last binary before destinations were
// A-labels (schema 1, testdata/schema1-idn.db): one message for
// u@café.test and v@customer.tld, indexed under "café.test" and
// "customer.tld", with café.test eligible, and a dead-list entry for
// etrn-only:café.test. Opened with the same policy key (no rebuild), the
// migrations alone bring it to the A-label form.
func TestIDNFixture(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("testdata", "schema1-idn.db"))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "queue.db")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	var old []string
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	db.View(func(tx *boltTx) error {
		return tx.Bucket(bktFlush).ForEach(func(k, _ []byte) error {
			old = append(old, string(k))
			return nil
		})
	})
	db.Close()
	if !slices.Contains(old, "test.café\x000000000000b1") {
		t.Fatalf("fixture index %q lacks the U-label key", old)
	}

	eligible := func(d string) bool { return d == "xn--caf-dma.test" || eligibleTLD(d) }
	s, err := Open(path, Options{Eligible: eligible, PolicyKey: "idn", NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if r := s.Report(); r.SchemaFrom != 1 || r.SchemaTo < 3 || r.Rebuilt {
		t.Fatalf("Report = %+v", r)
	}
	if err := s.Check(); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"xn--caf-dma.test", "café.test"} {
		if res, err := s.Flush(name, false); err != nil || res.Messages != 1 {
			t.Errorf("Flush(%q) = %+v, %v", name, res, err)
		}
	}
	dests, err := s.Dests()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := dests["etrn-only:xn--caf-dma.test"]; !ok || len(dests) != 1 {
		t.Errorf("Dests = %+v", dests)
	}
	if err := s.Check(); err != nil {
		t.Fatal(err)
	}
}
