package listener

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"
)

// TestGroup: Serve hands each connection to its handler, Close ends
// Serve with ErrClosed and refuses new sessions, and Wait cuts the
// sessions still running when its context ends.
func TestGroup(t *testing.T) {
	var g Group[net.Conn]
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	started := make(chan struct{})
	served := make(chan error, 1)
	go func() {
		served <- g.Serve(l, func(c net.Conn) {
			defer c.Close()
			if !g.Add(c) {
				return
			}
			defer g.Remove(c)
			close(started)
			c.Read(make([]byte, 1)) // until cut
		})
	}()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	select {
	case <-started:
	case <-time.After(10 * time.Second):
		t.Fatal("the handler did not start")
	}
	if n := g.Len(); n != 1 {
		t.Fatalf("Len = %d, want 1", n)
	}
	g.Close(nil)
	if err := <-served; !errors.Is(err, ErrClosed) {
		t.Fatalf("Serve = %v, want ErrClosed", err)
	}
	if g.Add(nil) {
		t.Fatal("Add after Close succeeded")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	cut := 0
	err = g.Wait(ctx, func(c net.Conn) { cut++; c.SetDeadline(time.Now()) })
	if !errors.Is(err, context.DeadlineExceeded) || cut != 1 {
		t.Fatalf("Wait = %v after cutting %d sessions, want the deadline after 1", err, cut)
	}
	if n := g.Len(); n != 0 {
		t.Fatalf("Len after Wait = %d, want 0", n)
	}
	if err := g.Serve(l, nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("Serve after Close = %v, want ErrClosed", err)
	}
}

// TestGroupWorkers: connections one after another and many at once are
// each handled once, by goroutines that wait for the next connection
// after one (some of the concurrent ones end: more than MaxIdleWorkers
// would wait), and the waiting ones end when Serve returns.
func TestGroupWorkers(t *testing.T) {
	var g Group[net.Conn]
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	handled := make(chan byte, 200)
	served := make(chan error, 1)
	go func() {
		served <- g.Serve(l, func(c net.Conn) {
			defer c.Close()
			var b [1]byte
			if _, err := c.Read(b[:]); err == nil {
				handled <- b[0]
			}
			if b[0] == 'c' {
				<-release
			}
		})
	}()
	send := func(b byte) net.Conn {
		c, err := net.Dial("tcp", l.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		c.Write([]byte{b})
		return c
	}
	wait := func(want byte) {
		select {
		case b := <-handled:
			if b != want {
				t.Fatalf("handled %q, want %q", b, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("connection %q not handled", want)
		}
	}
	for range 20 { // one after another: one worker, reused
		c := send('s')
		wait('s')
		c.Close()
	}
	var conns []net.Conn
	for range MaxIdleWorkers + 10 { // at once: more workers than may wait
		conns = append(conns, send('c'))
		wait('c')
	}
	close(release)
	for _, c := range conns {
		c.Close()
	}
	c := send('s') // an idle worker or a new one
	wait('s')
	c.Close()
	g.Close(nil)
	if err := <-served; !errors.Is(err, ErrClosed) {
		t.Fatalf("Serve = %v, want ErrClosed", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := g.Wait(ctx, func(c net.Conn) { c.Close() }); err != nil {
		t.Fatal(err)
	}
}
