package store

import (
	"bytes"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// fileBlocks returns the queue file's size and the bytes of disk it takes.
func fileBlocks(t *testing.T, path string) (size, allocated int64) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		t.Skip("no block count on this system")
	}
	return fi.Size(), st.Blocks * 512
}

// highWater is bbolt's high-water mark of the file, in bytes.
func highWater(t *testing.T, s *Store) int64 {
	t.Helper()
	var hw int64
	if err := s.db.View(func(tx *boltTx) error { hw = tx.Size(); return nil }); err != nil {
		t.Fatal(err)
	}
	return hw
}

// TestGrowAhead: the file is written ahead of the high-water mark, with
// zeros that take disk blocks (no hole), past several of bbolt's own
// growths; the messages stay whole across a reopen.
func TestGrowAhead(t *testing.T) {
	f := open(t)
	body := bytes.Repeat([]byte("x"), 16<<10)
	var ids []ID
	for i := 0; i < 400; i++ { // about 7 MiB: past growLead more than once
		m := newMsg("u@customer.tld")
		if err := f.s.Enqueue(m, body); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, m.ID)
	}
	hw := highWater(t, f.s)
	size, alloc := fileBlocks(t, f.path)
	if size < hw+growLead-growStep {
		t.Errorf("file %d bytes, high-water mark %d: want at least %d written ahead", size, hw, growLead-growStep)
	}
	if alloc < size {
		t.Errorf("file %d bytes takes %d on disk: a hole where zeros were written", size, alloc)
	}
	f.reopen()
	f.check()
	for _, id := range ids {
		if got, err := f.s.Body(id); err != nil || len(got) != len(body) {
			t.Fatalf("body of %s after reopen: %d bytes, %v", id, len(got), err)
		}
	}
}

// TestGrowSparse: Options.sparse leaves the growing to bbolt, which
// truncates the file longer (a hole) rather than writing it.
func TestGrowSparse(t *testing.T) {
	path := filepath.Join(t.TempDir(), "queue.db")
	s, err := Open(path, Options{NoSync: true, sparse: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Enqueue(newMsg("u@customer.tld"), []byte("Subject: x\r\n\r\nbody\r\n")); err != nil {
		t.Fatal(err)
	}
	if s.file != nil || s.zeroed != 0 {
		t.Errorf("sparse store wrote ahead: file %v, zeroed %d", s.file, s.zeroed)
	}
	if size, _ := fileBlocks(t, path); size >= growStep {
		t.Errorf("sparse store file %d bytes after one message: written ahead", size)
	}
}
