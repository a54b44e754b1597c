package store

import (
	"bytes"
	"errors"
	"fmt"
	"io"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// Message content is kept in bucket body. A body of at most BodyChunk
// bytes is one value under msgKey(id), as schema 1 kept every body (most
// mail: no overhead). A larger one is kept in chunks of BodyChunk bytes
// under bodyKey(id, 0), bodyKey(id, 1), ... in order, each the one value
// (key chunkValue) of its own nested bucket: bbolt rewrites the whole
// leaf a key is added to, and keeps up to four values in a leaf, so
// chunks stored side by side as values would each be copied (read
// through the mmap, written again) by the next few insertions; behind a
// bucket header a chunk is written once and never read back until
// delivery. (A nested bucket costs a page of its own, which is why small
// bodies are plain values.) Readers take at most BodyChunk bytes per read
// transaction, so neither their memory nor the life of a read
// transaction (which holds bbolt's remap of a growing file) depends on
// the size of a message. Salvage (salvage.go) reads this layout from the
// raw pages: change them together.

// chunkValue is the key of the one value in a chunk's bucket.
var chunkValue = []byte{0}

// putChunk stores chunk seq of id's body. bbolt keeps a reference to
// data until the transaction ends.
func putChunk(b *bolt.Bucket, id ID, seq uint32, data []byte) error {
	cb, err := b.CreateBucketIfNotExists(bodyKey(id, seq))
	if err != nil {
		return err
	}
	return cb.Put(chunkValue, data)
}

// getChunk returns chunk seq of id's body (nil, false when absent); the
// slice is valid for the transaction only.
func getChunk(b *bolt.Bucket, id ID, seq uint32) ([]byte, bool) {
	cb := b.Bucket(bodyKey(id, seq))
	if cb == nil {
		return nil, false
	}
	return cb.Get(chunkValue), true
}

// BodyChunk is the largest value in bucket body written by this version.
const BodyChunk = 256 << 10

// putBody stores body under id: one value, or chunks when larger than
// BodyChunk.
func (w *wtx) putBody(id ID, body []byte) error {
	if len(body) <= BodyChunk {
		return w.body.Put(msgKey(id), body)
	}
	for seq := uint32(0); seq == 0 || len(body) > 0; seq++ {
		n := min(len(body), BodyChunk)
		if err := putChunk(w.body, id, seq, body[:n]); err != nil {
			return err
		}
		body = body[n:]
	}
	return nil
}

// deleteBody removes id's body, one value or chunks.
func deleteBody(b *bolt.Bucket, id ID) error {
	if err := b.Delete(msgKey(id)); err != nil {
		return err
	}
	for seq := uint32(0); ; seq++ {
		err := b.DeleteBucket(bodyKey(id, seq))
		if errors.Is(err, berrors.ErrBucketNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// bodySize sums the lengths of id's body chunks in tx; ok is false when
// there is no body.
func bodySize(b *bolt.Bucket, id ID) (n int64, ok bool) {
	if v := b.Get(msgKey(id)); v != nil {
		return int64(len(v)), true
	}
	for seq := uint32(0); ; seq++ {
		v, found := getChunk(b, id, seq)
		if !found {
			return n, ok
		}
		n += int64(len(v))
		ok = true
	}
}

// bodyBytes returns a copy of id's whole body (quarantine only: rare).
func bodyBytes(b *bolt.Bucket, id ID) ([]byte, bool) {
	if v := b.Get(msgKey(id)); v != nil {
		return append([]byte(nil), v...), true
	}
	var out []byte
	ok := false
	for seq := uint32(0); ; seq++ {
		v, found := getChunk(b, id, seq)
		if !found {
			return out, ok
		}
		out = append(out, v...)
		ok = true
	}
}

// BodyReader reads a message's content chunk by chunk, each chunk in its
// own read transaction. It holds at most one chunk. If the message is
// removed while it is read, Read fails with ErrNotFound: a body is never
// seen cut short.
type BodyReader struct {
	s     *Store
	id    ID
	seq   uint32 // next chunk
	off   int    // next offset in a body kept as one value
	whole bool   // the body is one value
	buf   []byte
	rest  []byte // unread part of buf
	eof   bool
	// mem is the content of a message still waiting in the journal's
	// applier (Store.journaled), read from memory.
	mem []byte
}

// BodyReader returns a reader of the message content.
func (s *Store) BodyReader(id ID) *BodyReader { return &BodyReader{s: s, id: id} }

// Read implements io.Reader.
func (r *BodyReader) Read(p []byte) (int, error) {
	for len(r.rest) == 0 {
		if r.eof {
			return 0, io.EOF
		}
		if err := r.next(); err != nil {
			return 0, err
		}
	}
	n := copy(p, r.rest)
	r.rest = r.rest[n:]
	return n, nil
}

// WriteTo implements io.WriterTo: io.Copy writes chunk by chunk.
func (r *BodyReader) WriteTo(w io.Writer) (int64, error) {
	var total int64
	for {
		if len(r.rest) > 0 {
			n, err := w.Write(r.rest)
			total += int64(n)
			r.rest = r.rest[n:]
			if err != nil {
				return total, err
			}
		}
		if r.eof {
			return total, nil
		}
		if err := r.next(); err != nil {
			return total, err
		}
	}
}

// next loads the next chunk into buf.
func (r *BodyReader) next() error {
	err := r.body()
	var de *DamageError
	if errors.As(err, &de) {
		de.Cause = fmt.Sprintf("body of %s: %s", r.id, de.Cause)
		r.s.reportDamaged(r.id, de)
	}
	return err
}

func (r *BodyReader) body() error {
	if r.seq == 0 && r.off == 0 && r.mem == nil {
		r.mem, _ = r.s.journaled(r.id)
	}
	if r.mem != nil {
		end := min(len(r.mem), r.off+BodyChunk)
		r.buf = append(r.buf[:0], r.mem[r.off:end]...)
		r.off = end
		r.eof = end == len(r.mem)
		r.rest = r.buf
		return nil
	}
	return r.s.viewFiled(func(tx *bolt.Tx) error {
		b := tx.Bucket(bktBody)
		if r.seq == 0 && r.off == 0 {
			r.whole = b.Get(msgKey(r.id)) != nil
		}
		if r.whole {
			v := b.Get(msgKey(r.id))
			if v == nil {
				return fmt.Errorf("store: body %s: %w", r.id, ErrNotFound)
			}
			end := min(len(v), r.off+BodyChunk)
			r.buf = append(r.buf[:0], v[r.off:end]...)
			r.off = end
			r.eof = end == len(v)
			r.rest = r.buf
			return nil
		}
		v, ok := getChunk(b, r.id, r.seq)
		if !ok {
			if _, first := getChunk(b, r.id, 0); r.seq == 0 || !first {
				return fmt.Errorf("store: body %s: %w", r.id, ErrNotFound)
			}
			r.eof, r.rest = true, nil
			return nil
		}
		r.buf = append(r.buf[:0], v...)
		r.rest = r.buf
		r.seq++
		return nil
	})
}

// Body returns a copy of the whole content. For small bodies and tests;
// the daemon streams with BodyReader.
func (s *Store) Body(id ID) ([]byte, error) {
	var b bytes.Buffer
	if _, err := b.ReadFrom(s.BodyReader(id)); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// BodyHead returns the content up to and including the empty line that
// ends the header, or the first limit bytes when the header is longer
// (or the whole content when shorter).
func (s *Store) BodyHead(id ID, limit int) ([]byte, error) {
	// A body kept as one value (up to BodyChunk) is searched where it
	// lies, in one read transaction, and only the header is copied.
	var head []byte
	whole := false
	if v, ok := s.journaled(id); ok {
		return bodyHead(v, limit), nil
	}
	err := s.viewFiled(func(tx *bolt.Tx) error {
		v := tx.Bucket(bktBody).Get(msgKey(id))
		if v == nil {
			return nil
		}
		whole = true
		head = bodyHead(v, limit)
		return nil
	})
	var de *DamageError
	if errors.As(err, &de) {
		de.Cause = fmt.Sprintf("body of %s: %s", id, de.Cause)
		s.reportDamaged(id, de)
	}
	if err != nil || whole {
		return head, err
	}
	return s.chunkedHead(id, limit)
}

// bodyHead copies the head of a content held as one value.
func bodyHead(v []byte, limit int) []byte {
	v = v[:min(len(v), limit)]
	if i := bytes.Index(v, []byte("\r\n\r\n")); i >= 0 {
		v = v[:i+4]
	}
	return append([]byte(nil), v...)
}

// chunkedHead is BodyHead for a body in chunks, read through BodyReader.
func (s *Store) chunkedHead(id ID, limit int) ([]byte, error) {
	r := s.BodyReader(id)
	var head []byte
	buf := make([]byte, 32<<10)
	for len(head) < limit {
		n, err := r.Read(buf[:min(len(buf), limit-len(head))])
		from := max(0, len(head)-3)
		head = append(head, buf[:n]...)
		if i := bytes.Index(head[from:], []byte("\r\n\r\n")); i >= 0 {
			return head[:from+i+4], nil
		}
		if errors.Is(err, io.EOF) {
			return head, nil
		}
		if err != nil {
			return nil, err
		}
	}
	return head, nil
}
