package relaytest

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/holdfast-mta/holdfast/store"
	"github.com/holdfast-mta/holdfast/test/crashtest"
)

// TestConcurrentLargeMessagesMemory is the issue's "300 outside clients,
// each sending 9 MB of DATA" scaled to what CI affords: 100 clients send
// 5 MB each at once (500 MB in flight). Content goes to queue.db in
// 256 KiB chunks as it arrives, so the daemon's peak RSS (VmHWM) is
// bounded by the sessions' chunk buffers and the commits in progress,
// not by 100 × 5 MB; every message is acknowledged and stored whole.
//
// The budget, rssBudget, is 150 MB of anonymous memory (twice that for
// the total peak RSS, which includes queue.db's mapped pages): 100 sessions × (one 256 KiB chunk
// being filled + one being committed) is 50 MB, the Go runtime may let
// the heap reach twice its live size before collecting (GOGC=100), and
// queue.db's pages that bbolt touches through its mmap count too
// (measured: 79 MB peak). Before the content was spooled the same run
// peaked at 2,401 MB (the bodies were buffered whole; the issue measured
// 3.9 GB for 300 × 9 MB).
func TestConcurrentLargeMessagesMemory(t *testing.T) {
	t.Parallel()
	const (
		clients   = 100
		size      = 5 << 20
		rssBudget = 150 << 20
	)
	transport := filepath.Join(t.TempDir(), "transport")
	// Mail is deferred on arrival (defer_transports): nothing is
	// delivered, so only reception is measured.
	if err := os.WriteFile(transport, []byte("sink.test smtp:[127.0.0.1]:9\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	d := crashtest.NewDaemon(t, map[string]string{
		"mynetworks":             "127.0.0.0/8",
		"relay_domains":          "sink.test",
		"transport_maps":         "texthash:" + transport,
		"defer_transports":       "smtp",
		"message_size_limit":     "10240000",
		"smtpd_connection_limit": "200",
		"smtpd_error_sleep_time": "0",
	})
	d.Start()
	base := d.ProcStatus("VmRSS")

	var peakRSS, peakAnon atomic.Int64
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			select {
			case <-stop:
				return
			case <-time.After(25 * time.Millisecond):
			}
			if r := d.ProcStatus("VmRSS"); r > peakRSS.Load() {
				peakRSS.Store(r)
			}
			if r := d.ProcStatus("RssAnon"); r > peakAnon.Load() {
				peakAnon.Store(r)
			}
		}
	}()

	line := strings.Repeat("x", 998) + "\r\n"
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- sendLarge(d.Addr(), i, size, line)
		}()
	}
	wg.Wait()
	took := time.Since(start)
	close(stop)
	<-sampled
	hwm := d.ProcStatus("VmHWM")
	close(errs)
	failed := 0
	for err := range errs {
		if err != nil {
			failed++
			if failed <= 3 {
				t.Error(err)
			}
		}
	}
	t.Logf("%d clients × %d MB in %v: RSS before %d MB, peak VmRSS %d MB (RssAnon %d MB), VmHWM %d MB; budget %d MB",
		clients, size>>20, took.Round(100*time.Millisecond), base>>20, peakRSS.Load()>>20, peakAnon.Load()>>20, hwm>>20, rssBudget>>20)
	if failed > 0 {
		t.Fatalf("%d of %d messages not acknowledged", failed, clients)
	}
	if hwm == 0 {
		t.Skip("no /proc/PID/status: memory not measured")
	}
	// The budget holds the daemon's own memory (anonymous pages, sampled
	// every 25 ms); the total peak also counts queue.db's pages mapped in
	// by bbolt, which the kernel can drop, and gets more room on a loaded
	// machine (152 MB was seen once under load average 19).
	if a := peakAnon.Load(); a > rssBudget {
		t.Errorf("daemon peak anonymous memory %d MB over the %d MB budget for %d × %d MB in flight", a>>20, rssBudget>>20, clients, size>>20)
	}
	if hwm > 2*rssBudget {
		t.Errorf("daemon peak RSS %d MB over %d MB for %d × %d MB in flight", hwm>>20, 2*rssBudget>>20, clients, size>>20)
	}
	t0 := time.Now()
	if err := d.Stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	q, err := store.Open(d.QueueDB(), store.Options{Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	st, err := q.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if n := st.Incoming + st.Active + st.Deferred; n != clients || st.Bytes < clients*size {
		t.Errorf("queue holds %d messages, %d bytes; want %d of over %d MB", n, st.Bytes, clients, size>>20)
	}
	t.Logf("stopped and checked in %v", time.Since(t0).Round(100*time.Millisecond))
}

// sendLarge sends one message of about size bytes from 127.0.0.1.
func sendLarge(addr string, i, size int, line string) error {
	s, code, msg, err := crashtest.Dial(addr, "127.0.0.1", 30*time.Second)
	if err != nil {
		return fmt.Errorf("client %d: dial: %v", i, err)
	}
	defer s.Close()
	if code != 220 {
		return fmt.Errorf("client %d: greeting %d %s", i, code, msg)
	}
	for _, c := range []struct {
		cmd  string
		code int
	}{{"EHLO big.example", 250}, {"MAIL FROM:<big@big.example>", 250}, {fmt.Sprintf("RCPT TO:<u%d@sink.test>", i), 250}, {"DATA", 354}} {
		code, msg, err := s.Cmd("%s", c.cmd)
		if err != nil || code != c.code {
			return fmt.Errorf("client %d: %s: %d %s %v", i, c.cmd, code, msg, err)
		}
	}
	s.Conn.SetDeadline(time.Now().Add(3 * time.Minute))
	w := bufio.NewWriterSize(s.Conn, 64<<10)
	fmt.Fprintf(w, "%s: big-%d\r\nSubject: big %d\r\n\r\n", crashtest.SeqHeader, i, i)
	for sent := 0; sent < size; sent += len(line) {
		w.WriteString(line)
	}
	w.WriteString(".\r\n")
	if err := w.Flush(); err != nil {
		return fmt.Errorf("client %d: write: %v", i, err)
	}
	code, msg, err = s.Read()
	if err != nil || code != 250 {
		return fmt.Errorf("client %d: end of data: %d %s %v", i, code, msg, err)
	}
	return nil
}
