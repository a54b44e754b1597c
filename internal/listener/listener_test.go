package listener

import (
	"errors"
	"net"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// failing is a real TCP listener whose first n Accepts fail with err, as
// accept(2) does when the process is out of descriptors.
type failing struct {
	net.Listener
	n   atomic.Int32
	err error
}

func (f *failing) Accept() (net.Conn, error) {
	if f.n.Add(-1) >= 0 {
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", f.err)}
	}
	return f.Listener.Accept()
}

func tcp(t *testing.T) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// EMFILE and ENFILE are retried with backoff, logged once, and the
// connection waiting in the backlog is accepted when they pass.
func TestAcceptRetriesExhaustion(t *testing.T) {
	for _, errno := range []syscall.Errno{syscall.EMFILE, syscall.ENFILE} {
		t.Run(errno.Error(), func(t *testing.T) {
			var logs strings.Builder
			f := &failing{Listener: tcp(t), err: errno}
			f.n.Store(6) // 5+10+20+40+80+160 ms of backoff
			l := New(f, "test", zerolog.New(&logs))
			defer l.Close()
			c, err := net.Dial("tcp", f.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			got, err := l.Accept()
			if err != nil {
				t.Fatalf("accept: %v", err)
			}
			got.Close()
			if n := strings.Count(logs.String(), "accept failed; retrying"); n != 1 {
				t.Errorf("%d failure lines, want 1 (rate-limited):\n%s", n, logs.String())
			}
			if !strings.Contains(logs.String(), errno.Error()) || !strings.Contains(logs.String(), "accept works again") {
				t.Errorf("log:\n%s", logs.String())
			}
		})
	}
}

// A permanent error is returned at once; Close ends a retry in progress.
func TestAcceptPermanentAndClose(t *testing.T) {
	f := &failing{Listener: tcp(t), err: syscall.EBADF}
	f.n.Store(1)
	l := New(f, "test", zerolog.Nop())
	if _, err := l.Accept(); !errors.Is(err, syscall.EBADF) {
		t.Fatalf("got %v, want EBADF", err)
	}
	f.err = syscall.EMFILE
	f.n.Store(1 << 30)
	done := make(chan error, 1)
	go func() { _, err := l.Accept(); done <- err }()
	time.Sleep(50 * time.Millisecond) // let it enter the backoff (not a synchronisation: any moment works)
	l.Close()
	select {
	case err := <-done:
		if !errors.Is(err, net.ErrClosed) && !errors.Is(err, syscall.EMFILE) {
			t.Fatalf("after Close: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Accept did not return after Close")
	}
}

func TestTemporary(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{syscall.EMFILE, true},
		{syscall.ENFILE, true},
		{syscall.ENOBUFS, true},
		{syscall.ECONNABORTED, true},
		{syscall.EBADF, false},
		{net.ErrClosed, false},
		{errors.New("other"), false},
	} {
		err := &net.OpError{Op: "accept", Err: os.NewSyscallError("accept4", tc.err)}
		if got := Temporary(err); got != tc.want {
			t.Errorf("Temporary(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}
