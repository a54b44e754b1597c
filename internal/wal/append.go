package wal

import (
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// Append writes data as one record and returns its Seq after the record
// and every record written with it are on disk (one pwrite of the batch,
// one fdatasync). A lone caller writes at once; callers that arrive
// while a write is under way are written together by the next one (group
// commit without a timer, like store/commit.go's committer). Returns
// ErrFull when neither the current half has room nor the other half is
// wholly released. Safe for concurrent use.
func (l *Log) Append(data []byte) (uint64, error) {
	c := &call{data: data, done: make(chan result, 1)}
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return 0, ErrClosed
	}
	l.pending = append(l.pending, c)
	if l.running {
		l.mu.Unlock()
		if r := <-c.done; !r.lead {
			return r.seq, r.err
		}
		l.mu.Lock()
	}
	// Lead: c is the first of pending (no one was running, or the last
	// leader handed over to it).
	l.running = true
	batch := l.pending
	l.pending = nil
	released := l.released
	l.mu.Unlock()

	res := l.write(batch, released)

	// Hand the lead to the first caller that queued meanwhile before
	// answering this batch, so that the next write starts at once.
	l.mu.Lock()
	if len(l.pending) > 0 {
		l.pending[0].done <- result{lead: true}
	} else {
		l.running = false
		l.idle.Broadcast()
	}
	l.mu.Unlock()
	for i, o := range batch[1:] {
		o.done <- res[i+1]
	}
	return res[0].seq, res[0].err
}

// write places the batch's records after the last one, switching halves
// when one does not fit, writes them and fdatasyncs. It runs in the
// leader only.
func (l *Log) write(batch []*call, released uint64) []result {
	res := make([]result, len(batch))
	if l.err != nil {
		for i := range res {
			res[i].err = l.err
		}
		return res
	}
	start := time.Now()
	off := l.pos // where the pending piece of buf goes in half l.cur
	n := 0
	var err error
	for i, c := range batch {
		size := int64(hdrLen + len(c.data))
		if size > l.half {
			res[i].err = ErrTooBig
			continue
		}
		if l.pos+size > l.half {
			o := 1 - l.cur
			if l.top[o] > released {
				res[i].err = ErrFull
				continue
			}
			// The piece in the old half goes to disk before any record
			// of the new one (doc.go, Caveats).
			if err = l.flush(off); err != nil {
				break
			}
			l.cur, l.pos, off = o, 0, 0
			l.top[o], l.sum = 0, 0
		}
		l.buf, l.sum = encode(l.buf, l.next, c.data, l.sum)
		res[i].seq = l.next
		l.top[l.cur] = l.next
		l.next++
		l.pos += size
		n++
	}
	if err == nil {
		err = l.flush(off)
	}
	if err != nil {
		l.err = fmt.Errorf("wal: write: %w", err)
		for i := range res {
			res[i] = result{err: l.err}
		}
		return res
	}
	if n > 0 && l.OnCommit != nil {
		l.OnCommit(time.Since(start), n)
	}
	return res
}

// flush writes buf at off in the current half and syncs.
func (l *Log) flush(off int64) error {
	if len(l.buf) == 0 {
		return nil
	}
	err := l.writeSync(l.buf, int64(l.cur)*l.half+off)
	l.buf = l.buf[:0]
	return err
}

// writeSync writes b at off and fdatasyncs: the file's blocks are
// allocated already, so only data goes to disk.
func (l *Log) writeSync(b []byte, off int64) error {
	if _, err := l.f.WriteAt(b, off); err != nil {
		return err
	}
	l.syncs.Add(1)
	for {
		err := l.syncData(l.fd)
		if err != unix.EINTR {
			return err
		}
	}
}

// Release says every record with Seq <= seq is applied durably elsewhere:
// the half holding only such records may be reused.
func (l *Log) Release(seq uint64) {
	l.mu.Lock()
	l.released = max(l.released, seq)
	l.mu.Unlock()
}

// Close waits for the batches under way and closes the file. Appends
// after Close return ErrClosed.
func (l *Log) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	for l.running {
		l.idle.Wait()
	}
	l.mu.Unlock()
	return l.f.Close()
}

// create makes the log file at path, of size bytes of zeros with head
// written at its start, under a temporary name that
// it renames into place once it and its directory are synced: a file
// at path is always whole.
func create(path string, size int64, head []byte) (*os.File, error) {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, err
	}
	err = fill(f, size, head)
	if err == nil {
		err = f.Sync()
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err == nil {
		err = syncDir(filepath.Dir(path))
	}
	if err != nil {
		f.Close()
		os.Remove(tmp)
		return nil, err
	}
	return f, nil
}

// fill writes size bytes of zeros to f, then head at its start.
func fill(f *os.File, size int64, head []byte) error {
	zeros := make([]byte, min(size, 1<<20))
	for off := int64(0); off < size; off += int64(len(zeros)) {
		if _, err := f.WriteAt(zeros[:min(int64(len(zeros)), size-off)], off); err != nil {
			return err
		}
	}
	_, err := f.WriteAt(head, 0)
	return err
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// resize replaces the log's file by a new one of size bytes holding
// recs, the records not applied, at the start of its first half.
func (l *Log) resize(path string, size int64, recs []Record) error {
	var head []byte
	var sum uint32
	for _, r := range recs {
		head, sum = encode(head, r.Seq, r.Data, sum)
	}
	f, err := create(path, size, head)
	if err == nil {
		err = lock(f)
	}
	if err != nil {
		return fmt.Errorf("wal: resize: %w", err)
	}
	l.f.Close()
	l.f, l.fd, l.half = f, int(f.Fd()), size/2
	l.cur, l.pos, l.top, l.sum = 0, int64(len(head)), [2]uint64{}, sum
	if len(recs) > 0 {
		l.top[0] = recs[len(recs)-1].Seq
	}
	l.next = l.released + 1 + uint64(len(recs))
	return nil
}
