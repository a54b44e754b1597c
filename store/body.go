package store

import (
	"bytes"
	"errors"
	"fmt"
	"io"

	bolt "go.etcd.io/bbolt"
)

// Message content is kept in bucket body in chunks of at most BodyChunk
// bytes, under bodyKey(id, 0), bodyKey(id, 1), ... in order. A body
// written by a schema-1 binary is one value under msgKey(id); it is read
// the same way (legacy). Readers take one chunk per read transaction, so
// neither their memory nor the life of a read transaction (which holds
// bbolt's remap of a growing file) depends on the size of a message.

// BodyChunk is the largest value in bucket body written by this version.
const BodyChunk = 256 << 10

// putBody stores body in chunks under id.
func (w *wtx) putBody(id ID, body []byte) error {
	for seq := uint32(0); seq == 0 || len(body) > 0; seq++ {
		n := min(len(body), BodyChunk)
		if err := w.body.Put(bodyKey(id, seq), body[:n]); err != nil {
			return err
		}
		body = body[n:]
	}
	return nil
}

// deleteBody removes every chunk of id's body (and a legacy body).
func deleteBody(b *bolt.Bucket, id ID) error {
	if err := b.Delete(msgKey(id)); err != nil {
		return err
	}
	var keys [][]byte
	c := b.Cursor()
	p := []byte(id)
	for k, _ := c.Seek(bodyKey(id, 0)); k != nil && bytes.HasPrefix(k, p); k, _ = c.Next() {
		keys = append(keys, append([]byte(nil), k...))
	}
	for _, k := range keys {
		if err := b.Delete(k); err != nil {
			return err
		}
	}
	return nil
}

// bodySize sums the lengths of id's body chunks in tx; ok is false when
// there is no body.
func bodySize(b *bolt.Bucket, id ID) (n int64, ok bool) {
	if v := b.Get(msgKey(id)); v != nil {
		return int64(len(v)), true
	}
	c := b.Cursor()
	p := []byte(id)
	for k, v := c.Seek(bodyKey(id, 0)); k != nil && bytes.HasPrefix(k, p); k, v = c.Next() {
		n += int64(len(v))
		ok = true
	}
	return n, ok
}

// bodyBytes returns a copy of id's whole body (quarantine only: rare).
func bodyBytes(b *bolt.Bucket, id ID) ([]byte, bool) {
	if v := b.Get(msgKey(id)); v != nil {
		return append([]byte(nil), v...), true
	}
	var out []byte
	ok := false
	c := b.Cursor()
	p := []byte(id)
	for k, v := c.Seek(bodyKey(id, 0)); k != nil && bytes.HasPrefix(k, p); k, v = c.Next() {
		out = append(out, v...)
		ok = true
	}
	return out, ok
}

// BodyReader reads a message's content chunk by chunk, each chunk in its
// own read transaction. It holds at most one chunk. If the message is
// removed while it is read, Read fails with ErrNotFound: a body is never
// seen cut short.
type BodyReader struct {
	s      *Store
	id     ID
	seq    uint32 // next chunk
	off    int    // next offset in a legacy body
	legacy bool
	buf    []byte
	rest   []byte // unread part of buf
	eof    bool
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
	return r.s.view(func(tx *bolt.Tx) error {
		b := tx.Bucket(bktBody)
		if r.seq == 0 && r.off == 0 {
			r.legacy = b.Get(msgKey(r.id)) != nil
		}
		if r.legacy {
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
		v := b.Get(bodyKey(r.id, r.seq))
		if v == nil {
			if r.seq == 0 || b.Get(bodyKey(r.id, 0)) == nil {
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
