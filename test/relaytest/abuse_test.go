package relaytest

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/holdfast-mta/holdfast/control"
	"github.com/holdfast-mta/holdfast/internal/testutil"
	"github.com/holdfast-mta/holdfast/test/crashtest"
)

// dialRaw connects from local address from and returns the greeting.
func dialRaw(t *testing.T, d *crashtest.Daemon, from string) (*crashtest.Session, int, string) {
	t.Helper()
	s, code, msg, err := crashtest.Dial(d.Addr(), from, 10*time.Second)
	if err != nil {
		t.Fatalf("dial from %s: %v (daemon running: %v)\n%s", from, err, d.Running(), d.LogTail(30))
	}
	t.Cleanup(s.Close)
	return s, code, msg
}

// closedSoon reports whether the server closes s within d (reading and
// discarding anything it still sends).
func closedSoon(s *crashtest.Session, d time.Duration) bool {
	s.Conn.SetReadDeadline(time.Now().Add(d))
	_, err := io.Copy(io.Discard, s.Conn)
	var ne net.Error
	return err == nil || !(errors.As(err, &ne) && ne.Timeout())
}

// TestConnectionLimits: smtpd_client_connection_count_limit per client
// address and smtpd_connection_limit in total both answer 421 4.7.0 and
// hang up; a closed session frees its slot.
func TestConnectionLimits(t *testing.T) {
	t.Parallel()
	sink := crashtest.NewSink(t)
	d := newRelay(t, sink, map[string]string{
		"smtpd_client_connection_count_limit": "2",
		"smtpd_connection_limit":              "4",
	})
	a1, code, _ := dialRaw(t, d, "127.0.0.1")
	if code != 220 {
		t.Fatalf("first connection: %d", code)
	}
	a2, code, _ := dialRaw(t, d, "127.0.0.1")
	if code != 220 {
		t.Fatalf("second connection: %d", code)
	}
	a3, code, msg := dialRaw(t, d, "127.0.0.1")
	if code != 421 || !strings.HasPrefix(msg, "4.7.0") {
		t.Errorf("third connection from one client: got %d %s, want 421 4.7.0", code, msg)
	}
	if !closedSoon(a3, 3*time.Second) {
		t.Errorf("connection over the per-client limit was not closed")
	}

	b1, code, _ := dialRaw(t, d, "127.0.0.3")
	b2, code2, _ := dialRaw(t, d, "127.0.0.3")
	if code != 220 || code2 != 220 {
		t.Fatalf("second client's connections: %d, %d", code, code2)
	}
	_, code, msg = dialRaw(t, d, "127.0.0.4")
	if code != 421 || !strings.HasPrefix(msg, "4.7.0") {
		t.Errorf("fifth connection in total: got %d %s, want 421 4.7.0", code, msg)
	}

	// Closing a session frees a slot (for its client and in total).
	expect(t, a1, "QUIT", 221, "")
	closedSoon(a1, 3*time.Second)
	if !testutil.WaitFor(10*time.Second, func() bool { return greets(d) }) {
		t.Errorf("slot not freed after QUIT")
	}
	for _, s := range []*crashtest.Session{a2, b1, b2} {
		s.Cmd("QUIT")
	}
}

// TestSlowClientTimesOut: a client that sends one byte a second is cut
// off at smtpd_timeout (2 s here), and its slot is free again.
func TestSlowClientTimesOut(t *testing.T) {
	t.Parallel()
	sink := crashtest.NewSink(t)
	d := newRelay(t, sink, map[string]string{
		"smtpd_timeout":                       "2s",
		"smtpd_client_connection_count_limit": "1",
	})
	slow, code, _ := dialRaw(t, d, "127.0.0.1")
	if code != 220 {
		t.Fatalf("greeting %d", code)
	}
	_, code, msg := dialRaw(t, d, "127.0.0.1")
	if code != 421 {
		t.Errorf("second connection while the slow one holds the slot: %d %s, want 421", code, msg)
	}

	start := time.Now()
	line := "EHLO slow.stranger.example\r\n"
	closed := make(chan time.Duration, 1)
	go func() {
		// Reader: the server's last words and the close.
		slow.Conn.SetReadDeadline(time.Now().Add(15 * time.Second))
		io.Copy(io.Discard, slow.Conn)
		closed <- time.Since(start)
	}()
	var gone time.Duration
writing:
	for i := 0; i < len(line); i++ {
		if _, err := slow.Conn.Write([]byte{line[i]}); err != nil {
			break
		}
		select {
		case gone = <-closed:
			break writing
		case <-time.After(time.Second):
		}
	}
	if gone == 0 {
		select {
		case gone = <-closed:
		case <-time.After(10 * time.Second):
		}
	}
	switch {
	case gone == 0:
		t.Fatalf("a client sending one byte a second was not cut off in %v (smtpd_timeout = 2s)", time.Since(start).Round(time.Second))
	case gone > 6*time.Second:
		t.Errorf("slow client cut off after %v, want about smtpd_timeout = 2s", gone.Round(100*time.Millisecond))
	}
	t.Logf("slow client cut off after %v", gone.Round(100*time.Millisecond))

	if !testutil.WaitFor(10*time.Second, func() bool { return greets(d) }) {
		t.Errorf("the timed-out client's slot was not freed")
	}
}

// TestOverlongLines: a 100 KB command line and a 1 MB header line get a
// reply (or a hang-up), never an unbounded read; the daemon keeps serving
// and its memory stays bounded.
func TestOverlongLines(t *testing.T) {
	t.Parallel()
	sink := crashtest.NewSink(t)
	tempFailAll(sink)
	d := newRelay(t, sink, nil)
	base := d.RSS()

	s := dial(t, d, "127.0.0.1")
	long := "EHLO " + strings.Repeat("a", 100<<10)
	code, msg, err := s.Cmd("%s", long)
	if err != nil {
		t.Fatalf("100 KB command line: no reply: %v", err)
	}
	// Postfix cuts a line at line_length_limit and skips the rest; either
	// way the excess must not come back as further commands: the next
	// reply belongs to NOOP.
	if code != 250 && code/100 != 5 {
		t.Errorf("100 KB command line: %d %s, want 250 (truncated) or a 5xx", code, trim(msg))
	}
	if c, m, err := s.Cmd("NOOP"); err != nil || c != 250 {
		t.Errorf("NOOP after the 100 KB line: %d %s %v (the excess was read as commands?)", c, trim(m), err)
	}
	s.Close()

	s = dial(t, d, "127.0.0.1")
	expect(t, s, "EHLO stranger.example", 250, "")
	expect(t, s, "MAIL FROM:<a@stranger.example>", 250, "")
	expect(t, s, "RCPT TO:<user@sink.test>", 250, "")
	expect(t, s, "DATA", 354, "")
	w := bufio.NewWriter(s.Conn)
	fmt.Fprintf(w, "%s: overlong-header\r\nX-Long: ", crashtest.SeqHeader)
	chunk := strings.Repeat("b", 64<<10)
	for i := 0; i < 16; i++ {
		w.WriteString(chunk)
	}
	w.WriteString("\r\n\r\nbody\r\n.\r\n")
	werr := w.Flush()
	code, msg, err = s.Read()
	switch {
	case err != nil && werr == nil:
		t.Errorf("1 MB header line: no reply: %v", err)
	case err == nil && code != 250 && code/100 != 5:
		t.Errorf("1 MB header line: %d %s, want 250 or a 5xx", code, msg)
	}
	t.Logf("1 MB header line: %d %s", code, msg)

	// Still serving.
	s2 := dial(t, d, "127.0.0.1")
	expect(t, s2, "EHLO stranger.example", 250, "")
	expect(t, s2, "QUIT", 221, "")
	if grow := d.RSS() - base; base > 0 && grow > 32<<20 {
		t.Errorf("daemon memory grew by %d MB after overlong lines", grow>>20)
	}
}

// TestMessageSizeLimitStreaming: with message_size_limit = 1 MB, a 50 MB
// DATA stream is refused with 552 5.3.4 and the daemon does not hold it in
// memory; SIZE= over the limit is refused at MAIL FROM.
func TestMessageSizeLimitStreaming(t *testing.T) {
	t.Parallel()
	sink := crashtest.NewSink(t)
	tempFailAll(sink)
	d := newRelay(t, sink, map[string]string{"message_size_limit": "1048576"})

	s := dial(t, d, "127.0.0.1")
	expect(t, s, "EHLO stranger.example", 250, "")
	expect(t, s, "MAIL FROM:<a@stranger.example> SIZE=2000000", 552, "5.3.4")
	expect(t, s, "MAIL FROM:<a@stranger.example>", 250, "")
	expect(t, s, "RCPT TO:<user@sink.test>", 250, "")
	expect(t, s, "DATA", 354, "")

	base := d.RSS()
	var peak int64
	var mu sync.Mutex
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			if r := d.RSS(); r > 0 {
				mu.Lock()
				peak = max(peak, r)
				mu.Unlock()
			}
		}
	}()
	s.Conn.SetDeadline(time.Now().Add(60 * time.Second))
	w := bufio.NewWriterSize(s.Conn, 64<<10)
	fmt.Fprintf(w, "%s: big\r\nSubject: big\r\n\r\n", crashtest.SeqHeader)
	line := strings.Repeat("x", 998) + "\r\n"
	var werr error
	for sent := 0; sent < 50<<20 && werr == nil; sent += len(line) {
		_, werr = w.WriteString(line)
	}
	if werr == nil {
		w.WriteString(".\r\n")
		werr = w.Flush()
	}
	code, msg, err := s.Read()
	close(stop)
	<-sampled
	if err != nil {
		t.Fatalf("50 MB message at a 1 MB limit: no reply (write error %v): %v", werr, err)
	}
	if code != 552 || !strings.HasPrefix(msg, "5.3.4") {
		t.Errorf("50 MB message at a 1 MB limit: %d %s, want 552 5.3.4", code, msg)
	}
	mu.Lock()
	grow := peak - base
	mu.Unlock()
	t.Logf("RSS before %d KB, peak during the 50 MB stream %d KB (+%d KB)", base>>10, peak>>10, grow>>10)
	if base > 0 && grow > 16<<20 {
		t.Errorf("daemon memory grew by %d MB while a 50 MB message streamed against a 1 MB limit", grow>>20)
	}
	if werr == nil {
		expect(t, s, "QUIT", 221, "")
	}
}

// TestTooManyRecipients: the recipient after smtpd_recipient_limit gets
// 452 4.5.3 and the message still goes through with the first ones.
func TestTooManyRecipients(t *testing.T) {
	t.Parallel()
	sink := crashtest.NewSink(t)
	tempFailAll(sink)
	d := newRelay(t, sink, map[string]string{"smtpd_recipient_limit": "5"})
	s := dial(t, d, "127.0.0.1")
	expect(t, s, "EHLO stranger.example", 250, "")
	expect(t, s, "MAIL FROM:<a@stranger.example>", 250, "")
	for i := 0; i < 5; i++ {
		expect(t, s, fmt.Sprintf("RCPT TO:<u%d@sink.test>", i), 250, "")
	}
	expect(t, s, "RCPT TO:<u5@sink.test>", 452, "4.5.3")
	expect(t, s, "DATA", 354, "")
	expect(t, s, crashtest.SeqHeader+": many\r\n\r\nhi\r\n.", 250, "")
	expect(t, s, "QUIT", 221, "")
}

// TestHardErrorLimit: after smtpd_hard_error_limit errors the server says
// 421 4.7.0 and hangs up.
func TestHardErrorLimit(t *testing.T) {
	t.Parallel()
	sink := crashtest.NewSink(t)
	d := newRelay(t, sink, map[string]string{
		"smtpd_hard_error_limit": "3",
		"smtpd_soft_error_limit": "2",
	})
	s := dial(t, d, "127.0.0.1")
	got421 := false
	for i := 0; i < 6 && !got421; i++ {
		code, msg, err := s.Cmd("BOGUS %d", i)
		if err != nil {
			t.Fatalf("error %d: connection ended without 421: %v", i+1, err)
		}
		switch {
		case code == 421:
			got421 = true
			if !strings.HasPrefix(msg, "4.7.0") {
				t.Errorf("hard error limit reply: 421 %s, want 421 4.7.0", msg)
			}
			if i+1 > 3 {
				t.Errorf("421 came after %d errors, want after 3", i)
			}
		case code/100 != 5:
			t.Errorf("BOGUS: %d %s, want 5xx", code, msg)
		}
		if !got421 && i == 2 {
			// Postfix answers the third error, then 421 before reading
			// the next command.
			s.Conn.SetReadDeadline(time.Now().Add(2 * time.Second))
			code, msg, err = s.Read()
			if err == nil && code == 421 {
				got421 = true
				if !strings.HasPrefix(msg, "4.7.0") {
					t.Errorf("hard error limit reply: 421 %s, want 421 4.7.0", msg)
				}
			}
		}
	}
	if !got421 {
		t.Fatalf("no 421 after 6 errors with smtpd_hard_error_limit = 3")
	}
	if !closedSoon(s, 3*time.Second) {
		t.Errorf("connection still open after 421")
	}
}

// TestETRNFloodNoDuplicates: deferred mail for one destination, then 50
// ETRNs from one client while deliveries are slow: every message is
// delivered exactly once.
func TestETRNFloodNoDuplicates(t *testing.T) {
	t.Parallel()
	sink := crashtest.NewSink(t)
	tempFailAll(sink)
	d := newRelay(t, sink, map[string]string{"fast_flush_domains": "$relay_domains"})

	const n = 10
	s := dial(t, d, "127.0.0.1")
	expect(t, s, "EHLO stranger.example", 250, "")
	for i := 0; i < n; i++ {
		expect(t, s, "MAIL FROM:<a@stranger.example>", 250, "")
		expect(t, s, fmt.Sprintf("RCPT TO:<u%d@sink.test>", i%3), 250, "")
		expect(t, s, "DATA", 354, "")
		expect(t, s, fmt.Sprintf("%s: flood-%d\r\n\r\nhi\r\n.", crashtest.SeqHeader, i), 250, "")
	}
	// Every message tried once and deferred (minimal_backoff_time = 1h).
	if !sink.WaitFor(20*time.Second, func() bool { return sink.Attempts() >= n }) {
		t.Fatalf("only %d of %d first attempts reached the sink", sink.Attempts(), n)
	}
	waitQueue(t, d, "the deferrals to commit", func(s control.Stats) bool { return s.Deferred == int64(n) && s.Active == 0 })
	sink.SetTempFail(nil)
	sink.SetDelay(func() time.Duration { return 200 * time.Millisecond })

	ok := 0
	for i := 0; i < 50; i++ {
		code, msg := cmd(t, s, "ETRN sink.test")
		switch {
		case code/100 == 2:
			ok++
		case code == 421:
			t.Fatalf("ETRN %d: %d %s", i+1, code, msg)
		}
	}
	expect(t, s, "QUIT", 221, "")
	if ok == 0 {
		t.Fatalf("no ETRN accepted")
	}
	delivered := func() int {
		m := 0
		for i := 0; i < n; i++ {
			if sink.Count(fmt.Sprintf("flood-%d", i), fmt.Sprintf("u%d@sink.test", i%3)) > 0 {
				m++
			}
		}
		return m
	}
	if !sink.WaitFor(30*time.Second, func() bool { return delivered() == n }) {
		t.Fatalf("%d of %d deferred messages delivered after %d ETRNs", delivered(), n, ok)
	}
	// Every attempt has ended once the queue is empty: a duplicate
	// delivery would have reached the sink by then.
	waitQueue(t, d, "every attempt to end", queueEmpty)
	for i := 0; i < n; i++ {
		seq, rc := fmt.Sprintf("flood-%d", i), fmt.Sprintf("u%d@sink.test", i%3)
		if c := sink.Count(seq, rc); c != 1 {
			t.Errorf("%s delivered %d times after an ETRN flood, want 1", seq, c)
		}
	}
	t.Logf("%d ETRNs accepted; %d deliveries for %d messages", ok, sink.Total(), n)
}

// TestSlowDataTimesOut: smtpd_timeout also bounds the DATA phase: a body
// trickled at one byte a second is cut off, and nothing is queued.
func TestSlowDataTimesOut(t *testing.T) {
	t.Parallel()
	sink := crashtest.NewSink(t)
	d := newRelay(t, sink, map[string]string{"smtpd_timeout": "2s"})
	s := dial(t, d, "127.0.0.1")
	expect(t, s, "EHLO stranger.example", 250, "")
	expect(t, s, "MAIL FROM:<a@stranger.example>", 250, "")
	expect(t, s, "RCPT TO:<user@sink.test>", 250, "")
	expect(t, s, "DATA", 354, "")
	start := time.Now()
	closed := make(chan time.Duration, 1)
	go func() {
		s.Conn.SetReadDeadline(time.Now().Add(15 * time.Second))
		io.Copy(io.Discard, s.Conn)
		closed <- time.Since(start)
	}()
	body := crashtest.SeqHeader + ": slow-data\r\n\r\nthis body never ends, one byte at a time\r\n"
	var gone time.Duration
	for i := 0; i < len(body) && gone == 0; i++ {
		if _, err := s.Conn.Write([]byte{body[i]}); err != nil {
			break
		}
		select {
		case gone = <-closed:
		case <-time.After(time.Second):
		}
	}
	if gone == 0 {
		select {
		case gone = <-closed:
		case <-time.After(10 * time.Second):
		}
	}
	if gone == 0 || gone > 6*time.Second {
		t.Fatalf("a DATA phase at one byte a second was not cut off near smtpd_timeout = 2s (after %v)", time.Since(start).Round(time.Second))
	}
	t.Logf("slow DATA cut off after %v", gone.Round(100*time.Millisecond))
	waitQueue(t, d, "an empty queue", queueEmpty) // nothing queued, so nothing to deliver
	if n := sink.Attempts(); n != 0 {
		t.Errorf("a message cut off mid-DATA reached the sink %d times", n)
	}
}

// TestBDATSizeLimit: the same 1 MB limit holds for CHUNKING (RFC 3030):
// 50 chunks of 1 MB are refused with 552 5.3.4, never queued, and not
// held in memory.
func TestBDATSizeLimit(t *testing.T) {
	t.Parallel()
	sink := crashtest.NewSink(t)
	d := newRelay(t, sink, map[string]string{"message_size_limit": "1048576"})
	s := dial(t, d, "127.0.0.1")
	ehlo := expect(t, s, "EHLO stranger.example", 250, "")
	if !strings.Contains(ehlo, "CHUNKING") {
		t.Skipf("CHUNKING not announced:\n%s", ehlo)
	}
	expect(t, s, "MAIL FROM:<a@stranger.example>", 250, "")
	expect(t, s, "RCPT TO:<user@sink.test>", 250, "")
	base := d.RSS()
	var peak int64
	chunk := []byte(crashtest.SeqHeader + ": bdat\r\n\r\n" + strings.Repeat(strings.Repeat("y", 1022)+"\r\n", 1024))
	first, firstMsg, last, lastMsg := 0, "", 0, ""
	for i := 0; i < 50; i++ {
		verb := fmt.Sprintf("BDAT %d", len(chunk))
		if i == 49 {
			verb += " LAST"
		}
		s.Conn.SetDeadline(time.Now().Add(30 * time.Second))
		if _, err := s.Conn.Write(append([]byte(verb+"\r\n"), chunk...)); err != nil {
			t.Fatalf("chunk %d: %v", i+1, err)
		}
		code, msg, err := s.Read()
		if err != nil {
			t.Fatalf("chunk %d: no reply: %v", i+1, err)
		}
		if code != 250 && first == 0 {
			first, firstMsg = code, msg
		}
		last, lastMsg = code, msg
		peak = max(peak, d.RSS())
		if code == 421 {
			break
		}
	}
	if first != 552 || !strings.HasPrefix(firstMsg, "5.3.4") {
		t.Errorf("first refusal of a 50 MB BDAT message at a 1 MB limit: %d %s, want 552 5.3.4", first, firstMsg)
	}
	if last == 250 {
		t.Errorf("BDAT LAST of an oversized message: %d %s", last, lastMsg)
	}
	t.Logf("BDAT: RSS before %d KB, peak %d KB; first refusal %d %s", base>>10, peak>>10, first, firstMsg)
	if base > 0 && peak-base > 16<<20 {
		t.Errorf("daemon memory grew by %d MB during a 50 MB BDAT transfer at a 1 MB limit", (peak-base)>>20)
	}
	waitQueue(t, d, "an empty queue", queueEmpty) // nothing queued, so nothing to deliver
	if n := sink.Attempts(); n != 0 {
		t.Errorf("the oversized BDAT message reached the sink")
	}
}

// greets reports whether a new connection from 127.0.0.1 gets the 220
// greeting (a slot is free).
func greets(d *crashtest.Daemon) bool {
	s, code, _, err := crashtest.Dial(d.Addr(), "127.0.0.1", 5*time.Second)
	if err != nil {
		return false
	}
	s.Close()
	return code == 220
}
