package store

import bolt "go.etcd.io/bbolt"

// The queue file is kept written with zeros ahead of bbolt's high-water
// mark. bbolt grows a file with ftruncate, which leaves a hole: every
// page a commit then writes past the old end needs a block allocated, and
// the commit's fdatasync has to commit that allocation to the file
// system's journal as well as write the data. Pages that already hold
// zeros on disk are plain overwrites, and the fdatasync writes only the
// data. (Postfix pays for a new file at every message; we pay once per
// growStep of queue.) Measured: docs/benchmarks.md, issue 16.
const (
	// growLead is how far ahead of the high-water mark the zeros reach.
	growLead = 4 << 20
	// growStep is the most one transaction writes: the zeros go to disk
	// with that transaction's fsync.
	growStep = 1 << 20
)

// zeros is one growStep of zeros to write.
var zeros = make([]byte, growStep)

// growAhead writes up to growStep of zeros past the part of the file
// known to be written, when that part ends less than growLead past the
// high-water mark, through the store's own descriptor of the file (the
// page cache and bbolt's fdatasync are the file's, whichever descriptor
// wrote). It runs at the start of a write transaction, holding
// bbolt's writer lock: pages at or past the high-water mark belong to no
// one, and bbolt writes the ones this transaction takes only at its
// commit. A failure (full disk) is not the transaction's: the file is cut
// back to its size and bbolt grows it as it would have; zeroed moves on
// all the same, so a full disk does not cost a write at every commit.
func (s *Store) growAhead(tx *bolt.Tx) {
	if s.o.sparse {
		return
	}
	hw := tx.Size()
	if s.zeroed < hw {
		s.zeroed = hw // bbolt has written every page below its high-water mark
	}
	if s.zeroed >= hw+growLead {
		return
	}
	f := s.file
	if f == nil {
		return
	}
	fi, err := f.Stat()
	if err != nil {
		return
	}
	off := s.zeroed
	s.zeroed += growStep
	if _, err := f.WriteAt(zeros, off); err != nil && off+growStep > fi.Size() {
		f.Truncate(fi.Size())
	}
}

func (s *Store) closeFile() {
	if s.file != nil {
		s.file.Close()
	}
}
