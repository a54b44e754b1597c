package crashtest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/holdfast-mta/holdfast/internal/testutil"
	"github.com/holdfast-mta/holdfast/store"
)

// mountTmpfs mounts a tmpfs of the given size on dir (root only). It
// returns an error when that is not possible here (not root, no mount(8),
// a container without CAP_SYS_ADMIN); the caller falls back.
func mountTmpfs(t *testing.T, dir, size string) error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("not root")
	}
	if os.Getenv("HOLDFAST_NO_TMPFS") == "1" {
		return fmt.Errorf("HOLDFAST_NO_TMPFS=1")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size+",mode=0700", "tmpfs", dir).CombinedOutput()
	if err != nil {
		return fmt.Errorf("mount: %v: %s", err, strings.TrimSpace(string(out)))
	}
	t.Cleanup(func() {
		if !testutil.WaitFor(5*time.Second, func() bool { return exec.Command("umount", dir).Run() == nil }) {
			t.Errorf("umount %s failed", dir)
		}
	})
	return nil
}

// TestDiskFull fills the queue's file system (an 8 MB tmpfs, or when that
// cannot be mounted the queue_size_limit cap): acceptance answers
// 452 4.3.1, what was queued stays intact and is delivered, and acceptance
// resumes once space is freed.
func TestDiskFull(t *testing.T) {
	sink := NewSink(t)
	sink.SetTempFail(func(string, int) *smtp.SMTPError {
		return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "not now"}
	})
	fs := filepath.Join(t.TempDir(), "fs")
	mode := "tmpfs"
	extra := map[string]string{"minimal_backoff_time": "1h", "maximal_backoff_time": "2h", "queue_directory": fs}
	if err := mountTmpfs(t, fs, "8m"); err != nil {
		mode = "queue_size_limit"
		t.Logf("no tmpfs (%v): using queue_size_limit = 2m", err)
		extra["queue_size_limit"] = "2m"
	}
	d := crashConfig(t, sink, extra)
	filler := filepath.Join(fs, "filler")
	if mode == "tmpfs" {
		if err := os.WriteFile(filler, make([]byte, 5<<20), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	d.Start()

	var acked []string
	seq := 0
	send := func() (int, string) {
		seq++
		id := fmt.Sprintf("full-%04d", seq)
		code, msg := sendOne(d, id, "u@sink.test", 32<<10)
		if code == 250 {
			acked = append(acked, id)
		}
		return code, msg
	}
	full := false
	var code int
	var msg string
	for i := 0; i < 400 && !full; i++ {
		code, msg = send()
		switch {
		case code == 250:
		case code == 452 && strings.HasPrefix(msg, "4.3.1"):
			full = true
		default:
			t.Fatalf("%s: message %d: got %d %s, want 250 or 452 4.3.1\n%s", mode, seq, code, msg, d.LogTail(20))
		}
	}
	if !full {
		t.Fatalf("%s: %d messages of 32 KB accepted without 452 4.3.1", mode, len(acked))
	}
	if len(acked) == 0 {
		t.Fatalf("%s: not one message accepted before the disk was full", mode)
	}
	if !strings.Contains(msg, "Insufficient system storage") {
		t.Errorf("disk full reply %d %s, want Postfix's text \"Insufficient system storage\"", code, msg)
	}
	// A refused message gives back the space it had taken (its spooled
	// content, the pages of the failed commit): a message or two may fit
	// in it and be accepted (and must then be delivered, as every acked
	// one). The disk stays full: 452 4.3.1 comes back.
	refused, tries := 0, 0
	for ; tries < 10 && refused < 3; tries++ {
		switch code, msg := send(); {
		case code == 452 && strings.HasPrefix(msg, "4.3.1"):
			refused++
		case code != 250:
			t.Errorf("while full: %d %s, want 452 4.3.1", code, msg)
		}
	}
	if refused < 3 {
		t.Errorf("while full: %d of %d messages refused, want 452 4.3.1 again", refused, tries)
	}
	if !d.Running() {
		t.Fatalf("daemon died on a full disk:\n%s", d.LogTail(30))
	}
	t.Logf("%s: %d messages accepted before 452 4.3.1", mode, len(acked))

	// Free space: remove the filler; under the size cap, let the queue
	// drain to the sink.
	if mode == "tmpfs" {
		if err := os.Remove(filler); err != nil {
			t.Fatal(err)
		}
	} else {
		sink.SetTempFail(nil)
		etrnOnce(d, "sink.test")
		sink.WaitFor(20*time.Second, func() bool { return countMissing(sink, acked) == 0 })
	}
	resumed := testutil.WaitFor(10*time.Second, func() bool { code, _ := send(); return code == 250 })
	if !resumed {
		t.Fatalf("%s: acceptance did not resume after space was freed\n%s", mode, d.LogTail(20))
	}

	// Everything acknowledged arrives.
	sink.SetTempFail(nil)
	for i := 0; i < 10 && countMissing(sink, acked) > 0; i++ {
		etrnOnce(d, "sink.test")
		sink.WaitFor(time.Second, func() bool { return countMissing(sink, acked) == 0 })
	}
	if n := countMissing(sink, acked); n > 0 {
		t.Errorf("%s: %d of %d acknowledged messages not delivered after space was freed (without restart); the daemon's warnings and errors:\n%s",
			mode, n, len(acked), grepLevels(d.Log(), 12))
		d.Stop()
		d.Start()
		etrnOnce(d, "sink.test")
		sink.WaitFor(15*time.Second, func() bool { return countMissing(sink, acked) == 0 })
		if n := countMissing(sink, acked); n > 0 {
			t.Errorf("%s: %d acknowledged messages LOST (not delivered even after a restart)", mode, n)
		} else {
			t.Logf("after a restart all were delivered")
		}
	}
	settle(sink, time.Second, 5*time.Second)
	if err := d.Stop(); err != nil {
		t.Errorf("stop: %v", err)
	}
	verifyQueueEmpty(t, d)
	t.Logf("RESULT diskfull: mode=%s accepted=%d delivered=%d", mode, len(acked), len(acked)-countMissing(sink, acked))
}

// grepLevels returns the first n log lines at level warn or error.
func grepLevels(log string, n int) string {
	var out []string
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(l, `"level":"error"`) || strings.Contains(l, `"level":"warn"`) {
			out = append(out, l)
			if len(out) == n {
				break
			}
		}
	}
	return strings.Join(out, "\n")
}

func countMissing(s *Sink, seqs []string) int {
	n := 0
	for _, seq := range seqs {
		if s.Count(seq, "u@sink.test") == 0 {
			n++
		}
	}
	return n
}

// sendOne submits one message of about size bytes and returns the first
// non-2xx/3xx reply, or the reply to the final dot.
func sendOne(d *Daemon, seq, rcpt string, size int) (int, string) {
	s, code, msg, err := Dial(d.Addr(), "", 30*time.Second)
	if err != nil {
		return 0, err.Error()
	}
	defer s.Close()
	if code != 220 {
		return code, msg
	}
	steps := []struct {
		line string
		want int
	}{
		{"EHLO client.test", 250},
		{"MAIL FROM:<sender@client.test>", 250},
		{"RCPT TO:<" + rcpt + ">", 250},
		{"DATA", 354},
	}
	for _, st := range steps {
		code, msg, err := s.Cmd("%s", st.line)
		if err != nil {
			return 0, err.Error()
		}
		if code != st.want {
			return code, msg
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %s\r\nSubject: %s\r\n\r\n", SeqHeader, seq, seq)
	for b.Len() < size {
		b.WriteString("0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz\r\n")
	}
	b.WriteString(".")
	code, msg, err = s.Cmd("%s", b.String())
	if err != nil {
		return 0, err.Error()
	}
	s.Cmd("QUIT")
	return code, msg
}

// queueStats opens a stopped daemon's queue and returns its counters.
func queueStats(t *testing.T, d *Daemon) store.Stats {
	t.Helper()
	q, err := store.Open(d.QueueDB(), store.Options{Timeout: 5 * time.Second})
	if err != nil {
		t.Fatalf("open queue: %v", err)
	}
	defer q.Close()
	st, err := q.Stats()
	if err != nil {
		t.Fatalf("stats: %v", err)
	}
	return st
}
