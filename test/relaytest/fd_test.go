package relaytest

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/holdfast-mta/holdfast/internal/testutil"
	"github.com/holdfast-mta/holdfast/test/crashtest"
)

// TestDescriptorExhaustion: the daemon runs with RLIMIT_NOFILE lowered to
// 128 (prlimit(1), soft 100 raised by the daemon to the hard 128). 100 idle
// /metrics keep-alives and 300 SMTP connections that say nothing exhaust
// its descriptors (accept fails with EMFILE). The daemon must stay up,
// and once the flood ends it must greet, accept a message, deliver it and
// answer /metrics again.
func TestDescriptorExhaustion(t *testing.T) {
	t.Parallel()
	prlimit, err := exec.LookPath("prlimit")
	if err != nil {
		t.Skip("prlimit(1) (util-linux) is not installed")
	}
	sink := crashtest.NewSink(t)
	metrics := freeAddr(t)
	d := crashtest.NewDaemon(t, relayParams(t, sink, map[string]string{
		"metrics_listen":                      metrics,
		"smtpd_client_connection_count_limit": "0", // let the flood hold sessions
		"smtpd_client_connection_rate_limit":  "0", // and connect 300 times in a minute
	}))
	d.Wrap = []string{prlimit, "--nofile=100:128", "--"}
	d.Start()
	if !strings.Contains(d.Log(), `"soft":128,"hard":128`) {
		t.Errorf("the daemon did not log raising its soft open files limit to 128:\n%s", grepLines(d.Log(), "open files"))
	}

	// 100 idle keep-alives on /metrics (the server keeps at most 64).
	var flood []net.Conn
	defer func() {
		for _, c := range flood {
			c.Close()
		}
	}()
	for i := 0; i < 100; i++ {
		c, err := net.DialTimeout("tcp", metrics, 5*time.Second)
		if err != nil {
			t.Fatalf("metrics keep-alive %d: %v", i, err)
		}
		flood = append(flood, c)
		c.SetDeadline(time.Now().Add(10 * time.Second))
		fmt.Fprintf(c, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			continue // closed to make room: expected once over the cap
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	// 300 SMTP connections that never speak: beyond 128 descriptors.
	for i := 0; i < 300; i++ {
		c, err := net.DialTimeout("tcp", d.Addr(), 5*time.Second)
		if err != nil {
			t.Fatalf("flood connection %d: %v", i, err)
		}
		flood = append(flood, c)
	}
	ok := testutil.WaitFor(20*time.Second, func() bool {
		return strings.Contains(d.Log(), "too many open files")
	})
	if !ok {
		t.Fatalf("the flood did not exhaust the daemon's descriptors:\n%s", d.LogTail(20))
	}
	time.Sleep(500 * time.Millisecond) // a few rounds of failing accepts
	if !d.Running() {
		t.Fatalf("the daemon died under descriptor exhaustion:\n%s", d.LogTail(20))
	}
	if n := strings.Count(d.Log(), "accept failed; retrying"); n > 10 {
		t.Errorf("%d log lines about failing accepts: not rate-limited", n)
	}
	for _, c := range flood {
		c.Close()
	}
	flood = nil
	ended := time.Now()

	// After the flood: SMTP greets and takes a message, which is delivered.
	var s *crashtest.Session
	testutil.WaitFor(30*time.Second, func() bool {
		c, code, _, err := crashtest.Dial(d.Addr(), "127.0.0.1", 10*time.Second)
		if err == nil && code == 220 {
			s = c
			return true
		}
		if err == nil {
			c.Close()
		}
		return false
	})
	if s == nil {
		t.Fatalf("no 220 after the flood:\n%s", d.LogTail(20))
	}
	t.Logf("greeted %v after the flood ended", time.Since(ended).Round(time.Millisecond))
	defer s.Close()
	expect(t, s, "EHLO stranger.example", 250, "")
	expect(t, s, "MAIL FROM:<a@stranger.example>", 250, "")
	expect(t, s, "RCPT TO:<user@sink.test>", 250, "")
	expect(t, s, "DATA", 354, "")
	expect(t, s, crashtest.SeqHeader+": after-flood\r\nSubject: after the flood\r\n\r\nhello\r\n.", 250, "")
	if !sink.WaitFor(30*time.Second, func() bool { return sink.Count("after-flood", "user@sink.test") == 1 }) {
		t.Errorf("the message taken after the flood was not delivered:\n%s", d.LogTail(20))
	}
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Get("http://" + metrics + "/metrics")
	if err != nil {
		t.Fatalf("/metrics after the flood: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), "holdfast_") {
		t.Errorf("/metrics after the flood: %d %.200s", resp.StatusCode, body)
	}
	t.Logf("accept-failure log lines: %d; daemon RSS %d MB", strings.Count(d.Log(), "accept failed; retrying"), d.RSS()>>20)
}

// freeAddr is a loopback address that was free a moment ago (the metrics
// listener's; the harness picks the SMTP port the same way).
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// grepLines is the lines of log that contain s.
func grepLines(log, s string) string {
	var out []string
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(l, s) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
