package migrations

import (
	"slices"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// upTo returns a registry with the released steps up to version v: a
// database it writes is a file of that schema.
func upTo(v int) *Registry {
	r := &Registry{}
	for _, s := range Default.Steps() {
		if s.Version <= v {
			r.Register(s)
		}
	}
	return r
}

// keys returns a bucket's keys, and the value of each as "key=value".
func keys(t *testing.T, db *bolt.DB, bucket string) []string {
	t.Helper()
	var out []string
	db.View(func(tx *bolt.Tx) error {
		return tx.Bucket([]byte(bucket)).ForEach(func(k, v []byte) error {
			out = append(out, string(k)+"="+string(v))
			return nil
		})
	})
	return out
}

// A schema-2 file with U-label destinations in the flush index and the
// dead list is migrated to A-label keys; ASCII keys, literals and names
// that do not convert are left alone; running the step again changes
// nothing.
func TestIDNDestinations(t *testing.T) {
	db := openDB(t)
	if _, to, err := upTo(2).Apply(db); err != nil || to != 2 {
		t.Fatalf("schema 2: %d, %v", to, err)
	}
	const id1, id2, id3, id4, id5 = "0000000000a1", "0000000000a2", "0000000000a3", "0000000000a4", "0000000000a5"
	flush := map[string]string{
		"test.café\x00" + id1:         "test.xn--caf-dma\x00" + id1,
		"test.café.sub\x00" + id2:     "test.xn--caf-dma.sub\x00" + id2,
		"test.xn--caf-dma\x00" + id2:  "test.xn--caf-dma\x00" + id2,
		"tld.customer\x00" + id3:      "tld.customer\x00" + id3,
		"[192.0.2.1]\x00" + id4:       "[192.0.2.1]\x00" + id4,
		"test.a\u200db\x00" + id5:     "test.a\u200db\x00" + id5, // ZWJ: no A-label, kept
		"example.bücher.ab\x00" + id5: "example.xn--bcher-kva.ab\x00" + id5,
	}
	dest := map[string]string{
		"etrn-only:café.test":     "etrn-only:xn--caf-dma.test",
		"smtp:[bücher.test]:2525": "smtp:[xn--bcher-kva.test]:2525",
		"smtp:bücher.test:2525":   "smtp:xn--bcher-kva.test:2525",
		"smtp:customer.tld":       "smtp:customer.tld",
		"relay:[192.0.2.1]":       "relay:[192.0.2.1]",
		"smtp:straße.test":        "smtp:xn--strae-oqa.test",
		"smtp:xn--strae-oqa.test": "smtp:xn--strae-oqa.test",
		"smtp:a\u200db.test":      "smtp:a\u200db.test",
	}
	err := db.Update(func(tx *bolt.Tx) error {
		for k := range flush {
			if err := tx.Bucket([]byte("flush")).Put([]byte(k), nil); err != nil {
				return err
			}
		}
		for k := range dest {
			v := "old " + k
			if k == "smtp:xn--strae-oqa.test" {
				v = "newer"
			}
			if err := tx.Bucket([]byte("dest")).Put([]byte(k), []byte(v)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	var wantFlush, wantDest []string
	for _, v := range flush {
		if !slices.Contains(wantFlush, v+"=") {
			wantFlush = append(wantFlush, v+"=")
		}
	}
	for k, v := range dest {
		switch {
		case v == "smtp:xn--strae-oqa.test":
			if k == v {
				wantDest = append(wantDest, v+"=newer") // the A-label entry wins
			}
		default:
			wantDest = append(wantDest, v+"=old "+k)
		}
	}
	slices.Sort(wantFlush)
	slices.Sort(wantDest)
	for run := 1; run <= 2; run++ {
		if run == 1 {
			if from, to, err := Default.Apply(db); err != nil || from != 2 || to < 3 {
				t.Fatalf("Apply = %d, %d, %v", from, to, err)
			}
		} else if err := db.Update(idnDestinations); err != nil { // idempotent
			t.Fatal(err)
		}
		if got := keys(t, db, "flush"); !slices.Equal(got, wantFlush) {
			t.Errorf("run %d: flush keys\n got %q\nwant %q", run, got, wantFlush)
		}
		if got := keys(t, db, "dest"); !slices.Equal(got, wantDest) {
			t.Errorf("run %d: dest keys\n got %q\nwant %q", run, got, wantDest)
		}
	}
}
