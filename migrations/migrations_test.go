package migrations

import (
	"errors"
	"path/filepath"
	"testing"

	bolt "go.etcd.io/bbolt"
)

func openDB(t *testing.T) *bolt.DB {
	t.Helper()
	db, err := bolt.Open(filepath.Join(t.TempDir(), "q.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func version(t *testing.T, db *bolt.DB) int {
	t.Helper()
	var v int
	if err := db.View(func(tx *bolt.Tx) (err error) { v, err = Version(tx); return err }); err != nil {
		t.Fatal(err)
	}
	return v
}

func TestDefaultCreatesBuckets(t *testing.T) {
	db := openDB(t)
	n := Default.Latest()
	from, to, err := Default.Apply(db)
	if err != nil || from != 0 || to != n {
		t.Fatalf("Apply = %d, %d, %v; want 0, %d, nil", from, to, err, n)
	}
	db.View(func(tx *bolt.Tx) error {
		for _, n := range append(initialBuckets, spoolBucket) {
			if tx.Bucket([]byte(n)) == nil {
				t.Errorf("bucket %q missing", n)
			}
		}
		return nil
	})
	// Second run: nothing to do.
	if from, to, err := Default.Apply(db); err != nil || from != n || to != n {
		t.Fatalf("re-Apply = %d, %d, %v", from, to, err)
	}
}

func TestExtraStep(t *testing.T) {
	db := openDB(t)
	if _, _, err := Default.Apply(db); err != nil {
		t.Fatal(err)
	}
	n := Default.Latest()
	r := Default.Clone()
	runs := 0
	r.Register(Step{Version: n + 1, Name: "add extra", Apply: func(tx *bolt.Tx) error {
		runs++
		_, err := tx.CreateBucketIfNotExists([]byte("extra"))
		return err
	}})
	if Default.Latest() != n {
		t.Fatal("Clone shares steps with Default")
	}
	from, to, err := r.Apply(db)
	if err != nil || from != n || to != n+1 || runs != 1 {
		t.Fatalf("Apply = %d, %d, %v, runs %d", from, to, err, runs)
	}
	if version(t, db) != n+1 {
		t.Fatal("version not recorded")
	}
	// Idempotent: re-applying the step itself does no harm.
	if err := db.Update(r.Steps()[n].Apply); err != nil {
		t.Fatal(err)
	}
	// The released registry now refuses the newer file.
	if _, _, err := Default.Apply(db); !errors.Is(err, ErrTooNew) {
		t.Fatalf("Default.Apply on schema %d: %v, want ErrTooNew", n+1, err)
	}
}

func TestFailingStepRollsBack(t *testing.T) {
	db := openDB(t)
	n := Default.Latest()
	r := Default.Clone()
	boom := errors.New("boom")
	r.Register(Step{Version: n + 1, Name: "fails", Apply: func(tx *bolt.Tx) error {
		if _, err := tx.CreateBucket([]byte("half")); err != nil {
			return err
		}
		return boom
	}})
	_, to, err := r.Apply(db)
	if !errors.Is(err, boom) || to != n {
		t.Fatalf("Apply = %d, %v", to, err)
	}
	if version(t, db) != n {
		t.Fatal("failed step recorded")
	}
	db.View(func(tx *bolt.Tx) error {
		if tx.Bucket([]byte("half")) != nil {
			t.Error("failed step left a bucket")
		}
		return nil
	})
}

func TestDuplicatePanics(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("no panic")
		}
	}()
	Default.Clone().Register(Step{Version: 1, Name: "again", Apply: initial})
}
