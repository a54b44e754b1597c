package store

import (
	"encoding/binary"
	"slices"
	"testing"
	"time"
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
