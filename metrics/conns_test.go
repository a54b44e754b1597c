package metrics

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/holdfast-mta/holdfast/store"
)

// /metrics keeps at most maxConns connections: idle keep-alives
// beyond it are closed, the oldest first, and a new scrape is answered.
func TestConnectionCap(t *testing.T) {
	s, err := store.Open(filepath.Join(t.TempDir(), "queue.db"), store.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- Serve(l, New(s.Stats)) }()
	defer func() {
		l.Close()
		<-done
	}()
	const n = 2 * maxConns
	conns := make([]net.Conn, 0, n)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for i := 0; i < n; i++ {
		c, err := net.Dial("tcp", l.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		c.SetDeadline(time.Now().Add(10 * time.Second))
		fmt.Fprintf(c, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("scrape %d: %v", i, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	// n - maxConns were closed to make room, each the one idle the
	// longest when a new one came: the oldest, but for a connection whose
	// server goroutine went idle late on a loaded machine (so a few of the
	// newest half may go instead of as many of the oldest). A read on a
	// closed one ends at once, on the others at the shared deadline.
	open := make([]bool, n)
	var wg sync.WaitGroup
	deadline := time.Now().Add(500 * time.Millisecond)
	for i, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.SetReadDeadline(deadline)
			_, err := c.Read(make([]byte, 1))
			open[i] = errors.Is(err, os.ErrDeadlineExceeded)
		}()
	}
	wg.Wait()
	closed, newestClosed := 0, 0
	for i := range open {
		if !open[i] {
			closed++
			if i >= n-maxConns {
				newestClosed++
			}
		}
	}
	if closed != n-maxConns {
		t.Errorf("%d connections closed, want %d", closed, n-maxConns)
	}
	if newestClosed > maxConns/8 || !open[n-1] {
		t.Errorf("%d of the newest %d connections closed (the newest open: %v): not the ones idle the longest",
			newestClosed, maxConns, open[n-1])
	}
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Get("http://" + l.Addr().String() + "/metrics")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("new scrape: %v %v", resp, err)
	}
	resp.Body.Close()
}
