package crashtest

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	bolt "go.etcd.io/bbolt"
)

// queueSome starts a daemon whose sink refuses everything (451), queues n
// messages of about size bytes, and stops it: the messages stay deferred.
func queueSome(t *testing.T, n, size int) (*Daemon, *Sink, []string) {
	t.Helper()
	sink := NewSink(t)
	sink.SetTempFail(func(string, int) *smtp.SMTPError {
		return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "not now"}
	})
	d := crashConfig(t, sink, map[string]string{"minimal_backoff_time": "1h", "maximal_backoff_time": "2h"})
	d.Start()
	var seqs []string
	for i := 0; i < n; i++ {
		seq := fmt.Sprintf("q-%03d", i)
		if code, msg := sendOne(d, seq, "u@sink.test", size); code != 250 {
			t.Fatalf("queue %s: %d %s", seq, code, msg)
		}
		seqs = append(seqs, seq)
	}
	sink.WaitFor(10*time.Second, func() bool { return sink.Attempts() >= n })
	if err := d.Stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	return d, sink, seqs
}

// refusesToStart checks that serve exits instead of serving on a damaged
// queue.db, says so pointing at `holdfast db check`, and leaves the file
// as it was.
func refusesToStart(t *testing.T, d *Daemon, what string) {
	t.Helper()
	before, err := os.ReadFile(d.QueueDB())
	if err != nil {
		t.Fatal(err)
	}
	logBefore := len(d.Log())
	err = d.TryStart(10 * time.Second)
	out := d.Log()[logBefore:]
	if err == nil {
		d.Kill()
		t.Fatalf("holdfast serve started on a %s queue.db\n%s", what, out)
	}
	if c := crashed(out); c != "" {
		t.Errorf("serve CRASHED on a %s queue.db instead of refusing cleanly: %s", what, c)
	} else if !strings.Contains(out, "holdfast db check") {
		t.Errorf("serve on a %s queue.db: the message does not point at `holdfast db check`:\n%s", what, out)
	}
	after, err := os.ReadFile(d.QueueDB())
	if err != nil {
		t.Errorf("%s queue.db gone after the failed start: %v", what, err)
	} else if !bytes.Equal(before, after) {
		t.Errorf("the failed start modified the %s queue.db (%d -> %d bytes)", what, len(before), len(after))
	}
	if !t.Failed() {
		t.Logf("%s: %s", what, strings.TrimSpace(lastLine(out)))
	}
}

// crashed returns the Go runtime's crash lines (fatal error, panic,
// signal) from a process's output, "" when there are none.
func crashed(out string) string {
	var lines []string
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "fatal error:") || strings.HasPrefix(l, "panic:") ||
			strings.HasPrefix(l, "[signal ") || strings.HasPrefix(l, "unexpected fault") {
			lines = append(lines, l)
		}
		if strings.Contains(l, "go.etcd.io/bbolt") && len(lines) > 0 && len(lines) < 6 {
			lines = append(lines, strings.TrimSpace(l))
		}
	}
	return strings.Join(lines, " | ")
}

// dbCheckFails runs `holdfast db check` on a damaged queue: it must fail,
// and without crashing.
func dbCheckFails(t *testing.T, d *Daemon, what string) {
	t.Helper()
	out, errOut, code := d.Command(time.Minute, "db", "check")
	switch {
	case code == 0:
		t.Errorf("holdfast db check passed a %s queue.db", what)
	case crashed(out+errOut) != "":
		t.Errorf("holdfast db check CRASHED on a %s queue.db: %s", what, crashed(out+errOut))
	default:
		t.Logf("db check on %s: exit %d: %s", what, code, strings.TrimSpace(lastLine(out+errOut)))
	}
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// TestCorruptDatabaseRefused: garbage or a truncated queue.db stops serve
// at start with a clear message; `holdfast db check` reports the damage.
func TestCorruptDatabaseRefused(t *testing.T) {
	t.Run("garbage", func(t *testing.T) {
		sink := NewSink(t)
		d := crashConfig(t, sink, nil)
		junk := make([]byte, 256<<10)
		rng := rand.New(rand.NewPCG(1, 2))
		for i := range junk {
			junk[i] = byte(rng.Uint32())
		}
		if err := os.WriteFile(d.QueueDB(), junk, 0o600); err != nil {
			t.Fatal(err)
		}
		refusesToStart(t, d, "garbage")
		dbCheckFails(t, d, "garbage")
	})
	t.Run("truncated", func(t *testing.T) {
		d, _, _ := queueSome(t, 20, 16<<10)
		db, err := bolt.Open(d.QueueDB(), 0o600, &bolt.Options{ReadOnly: true, Timeout: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		var used int64
		db.View(func(tx *bolt.Tx) error { used = tx.Size(); return nil })
		db.Close()
		if err := os.Truncate(d.QueueDB(), used/2/4096*4096); err != nil {
			t.Fatal(err)
		}
		refusesToStart(t, d, "truncated")
		dbCheckFails(t, d, "truncated")
	})
}

// TestCorruptRecordMovedAside: one message record overwritten with junk
// does not stop serve; the record is moved aside (Stats.Corrupt) and the
// other messages are delivered.
func TestCorruptRecordMovedAside(t *testing.T) {
	d, sink, seqs := queueSome(t, 5, 2048)

	db, err := bolt.Open(d.QueueDB(), 0o600, &bolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	var victim string
	err = db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte("msg"))
		if b == nil {
			return fmt.Errorf("no bucket msg")
		}
		k, v := b.Cursor().First()
		if k == nil {
			return fmt.Errorf("bucket msg is empty")
		}
		victim = string(k)
		junk := bytes.Repeat([]byte{0xA5}, len(v))
		return b.Put(append([]byte(nil), k...), junk)
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}

	logBefore := len(d.Log())
	d.Start()
	sink.SetTempFail(nil)
	for i := 0; i < 15 && countMissing(sink, seqs) > 1; i++ {
		etrnOnce(d, "sink.test")
		sink.WaitFor(time.Second, func() bool { return countMissing(sink, seqs) <= 1 })
	}
	if n := countMissing(sink, seqs); n != 1 {
		t.Errorf("%d of %d messages missing; want exactly the corrupt one", n, len(seqs))
	}
	if !d.Running() {
		t.Fatalf("serve died on a corrupt record:\n%s", d.LogTail(30))
	}
	if err := d.Stop(); err != nil {
		t.Errorf("stop: %v", err)
	}
	log := d.Log()[logBefore:]
	if !strings.Contains(log, victim) {
		t.Errorf("the log does not name the corrupt record %s:\n%s", victim, log)
	}
	st := queueStats(t, d)
	if st.Corrupt != 1 {
		t.Errorf("Stats.Corrupt = %d, want 1 (the record moved aside)", st.Corrupt)
	}
	if live := st.Incoming + st.Active + st.Deferred + st.Hold; live != 0 {
		t.Errorf("%d messages still queued, want 0", live)
	}
	verifyCheck(t, d)
}

// verifyCheck runs store.Check through `holdfast db check` when the binary
// has it.
func verifyCheck(t *testing.T, d *Daemon) {
	t.Helper()
	out, errOut, code := d.Command(time.Minute, "db", "check")
	if code != 0 && !strings.Contains(errOut, "unknown command") {
		t.Errorf("holdfast db check: exit %d\n%s%s", code, out, errOut)
	}
}
