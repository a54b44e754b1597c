package store

import (
	"bytes"
	"errors"
	"io"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// content returns n bytes of numbered CRLF lines.
func content(n int) []byte {
	var b bytes.Buffer
	for i := 0; b.Len() < n; i++ {
		b.WriteString("line ")
		b.WriteString(string(rune('a' + i%26)))
		b.WriteString("\r\n")
	}
	return b.Bytes()[:n]
}

// chunks counts the keys of id's body.
func (f *fixture) chunks(id ID) int {
	f.t.Helper()
	n := 0
	f.s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bktBody).Cursor()
		for k, _ := c.Seek([]byte(id)); k != nil && bytes.HasPrefix(k, []byte(id)); k, _ = c.Next() {
			n++
		}
		return nil
	})
	return n
}

// TestBodyChunks: a body is stored in BodyChunk pieces and read back
// whole, streamed, and by its head; removal takes every chunk.
func TestBodyChunks(t *testing.T) {
	f := open(t)
	for _, size := range []int{0, 10, BodyChunk, BodyChunk + 1, 3*BodyChunk + 17} {
		body := content(size)
		m := newMsg("a@x.tld")
		if err := f.s.Enqueue(m, body); err != nil {
			t.Fatal(err)
		}
		if want := max(1, (size+BodyChunk-1)/BodyChunk); f.chunks(m.ID) != want {
			t.Errorf("size %d: %d chunks, want %d", size, f.chunks(m.ID), want)
		}
		got, err := f.s.Body(m.ID)
		if err != nil || !bytes.Equal(got, body) {
			t.Fatalf("size %d: Body %d bytes, %v", size, len(got), err)
		}
		var w bytes.Buffer
		if n, err := io.Copy(&w, f.s.BodyReader(m.ID)); err != nil || n != int64(size) || !bytes.Equal(w.Bytes(), body) {
			t.Fatalf("size %d: BodyReader %d, %v", size, n, err)
		}
		f.check()
		if _, err := f.s.Delete(m.ID); err != nil {
			t.Fatal(err)
		}
		if n := f.chunks(m.ID); n != 0 {
			t.Errorf("size %d: %d chunks left after delete", size, n)
		}
	}
	m := newMsg("a@x.tld")
	body := append([]byte("Subject: x\r\nFrom: y\r\n\r\n"), content(BodyChunk)...)
	f.s.Enqueue(m, body)
	if h, err := f.s.BodyHead(m.ID, 1<<20); err != nil || string(h) != "Subject: x\r\nFrom: y\r\n\r\n" {
		t.Errorf("BodyHead %q, %v", h, err)
	}
	if h, _ := f.s.BodyHead(m.ID, 5); string(h) != "Subje" {
		t.Errorf("BodyHead limited %q", h)
	}
	// A body kept as one value is searched where it lies.
	small := newMsg("a@x.tld")
	f.s.Enqueue(small, []byte("Subject: s\r\n\r\nbody\r\n"))
	if h, err := f.s.BodyHead(small.ID, 1<<20); err != nil || string(h) != "Subject: s\r\n\r\n" {
		t.Errorf("BodyHead of a one-value body %q, %v", h, err)
	}
	if h, _ := f.s.BodyHead(small.ID, 5); string(h) != "Subje" {
		t.Errorf("BodyHead of a one-value body, limited %q", h)
	}
	noEnd := newMsg("a@x.tld")
	f.s.Enqueue(noEnd, []byte("Subject: s\r\n"))
	if h, err := f.s.BodyHead(noEnd.ID, 1<<20); err != nil || string(h) != "Subject: s\r\n" {
		t.Errorf("BodyHead of a header without its end %q, %v", h, err)
	}
	if _, err := f.s.BodyHead("0000000000ZZ", 1<<20); !errors.Is(err, ErrNotFound) {
		t.Errorf("BodyHead of no message: %v, want ErrNotFound", err)
	}
	// A message removed while it is read is an error, never a short body.
	r := f.s.BodyReader(m.ID)
	if _, err := r.Read(make([]byte, 10)); err != nil {
		t.Fatal(err)
	}
	f.s.Delete(m.ID)
	if _, err := io.Copy(io.Discard, r); !errors.Is(err, ErrNotFound) {
		t.Errorf("read after delete: %v, want ErrNotFound", err)
	}
}

// TestSpool: content written in pieces of any size is committed chunk
// by chunk and queued whole by Enqueue; Abort and a crash leave nothing.
func TestSpool(t *testing.T) {
	f := open(t)
	body := content(2*BodyChunk + 1000)
	c, err := f.s.Spool(NewID())
	if err != nil {
		t.Fatal(err)
	}
	for p := body; len(p) > 0; {
		n := min(len(p), 7777)
		c.Write(p[:n])
		p = p[n:]
	}
	m := newMsg("a@x.tld")
	if err := c.Enqueue(m); err != nil {
		t.Fatal(err)
	}
	if m.Size != int64(len(body)) || f.chunks(m.ID) != 3 {
		t.Errorf("size %d, %d chunks", m.Size, f.chunks(m.ID))
	}
	f.reopen()
	if got, err := f.s.Body(m.ID); err != nil || !bytes.Equal(got, body) {
		t.Fatalf("after reopen: %d bytes, %v", len(got), err)
	}
	if s := f.stats(); s.Incoming != 1 || s.Bytes != int64(len(body)) {
		t.Errorf("stats %+v", s)
	}

	// Abort after two committed chunks.
	id := NewID()
	c, _ = f.s.Spool(id)
	c.Write(content(2 * BodyChunk))
	if f.chunks(id) != 2 {
		t.Fatalf("%d chunks committed before the end", f.chunks(id))
	}
	f.check() // a spool in progress is consistent
	c.Abort()
	if f.chunks(id) != 0 {
		t.Errorf("%d chunks after Abort", f.chunks(id))
	}

	// A crash in mid-spool: Open removes the chunks.
	id = NewID()
	c, _ = f.s.Spool(id)
	c.Write(content(BodyChunk + 5))
	f.crash()
	if f.chunks(id) != 0 {
		t.Errorf("%d chunks left by a crash after Open", f.chunks(id))
	}
	if s := f.stats(); s.Incoming != 1 {
		t.Errorf("stats after crash %+v", s)
	}
}

// TestSpoolFull: a chunk that does not fit (MaxSize) fails the spool;
// the rest of the content is accepted and dropped, Enqueue reports
// ErrNoSpace and nothing remains.
func TestSpoolFull(t *testing.T) {
	f := open(t)
	f.o.MaxSize = 2 * BodyChunk
	f.reopen()
	c, _ := f.s.Spool(NewID())
	var werr error
	for range 4 {
		if _, err := c.Write(content(BodyChunk)); err != nil {
			werr = err
		}
	}
	if !errors.Is(werr, ErrNoSpace) {
		t.Errorf("Write: %v, want ErrNoSpace", werr)
	}
	if err := c.Enqueue(newMsg("a@x.tld")); !errors.Is(err, ErrNoSpace) {
		t.Errorf("Enqueue: %v, want ErrNoSpace", err)
	}
	if s := f.stats(); s.Incoming != 0 {
		t.Errorf("stats %+v", s)
	}
}

// TestContentLimit: spools beyond ContentLimit wait, then get ErrBusy; a
// finished spool frees its share.
func TestContentLimit(t *testing.T) {
	f := open(t)
	f.o.ContentLimit = 2 * BodyChunk
	f.reopen()
	a, err1 := f.s.Spool(NewID())
	b, err2 := f.s.Spool(NewID())
	if err1 != nil || err2 != nil {
		t.Fatal(err1, err2)
	}
	got := make(chan error, 1)
	go func() {
		c, err := f.s.Spool(NewID())
		if err == nil {
			c.Abort()
		}
		got <- err
	}()
	a.Write([]byte("x\r\n"))
	if err := a.Enqueue(newMsg("a@x.tld")); err != nil {
		t.Fatal(err)
	}
	if err := <-got; err != nil {
		t.Fatalf("waiting Spool: %v", err)
	}
	c, _ := f.s.Spool(NewID())
	f.s.budget.wait = 200 * time.Millisecond
	start := time.Now()
	if _, err := f.s.Spool(NewID()); !errors.Is(err, ErrBusy) {
		t.Errorf("Spool over the limit: %v, want ErrBusy", err)
	}
	if d := time.Since(start); d < f.s.budget.wait {
		t.Errorf("gave up after %v, want %v", d, f.s.budget.wait)
	}
	b.Abort()
	c.Abort()
}
