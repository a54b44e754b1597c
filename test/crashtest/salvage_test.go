package crashtest

import (
	"encoding/binary"
	"math/rand/v2"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/holdfast-mta/holdfast/store"
)

// damagedPages picks the pages of queue.db to garble: "root" (the page
// listing the buckets), "branch" (the top page of bucket msg, a branch
// with this many messages) or "leaves" (three leaf pages of bucket msg,
// scattered).
func damagedPages(t *testing.T, path, kind string) ([]uint64, int64) {
	t.Helper()
	owners, err := store.PageBuckets(path)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	meta := make([]byte, 64)
	f.ReadAt(meta, 0)
	psize := int64(binary.LittleEndian.Uint32(meta[16+8:]))
	var root, branch, leaves []uint64
	for id, b := range owners {
		hdr := make([]byte, 16)
		f.ReadAt(hdr, int64(id)*psize)
		if binary.LittleEndian.Uint64(hdr) != id {
			continue // an overflow page
		}
		flags := binary.LittleEndian.Uint16(hdr[8:])
		switch {
		case b == "root":
			root = append(root, id)
		case b == "msg" && flags == 0x01:
			branch = append(branch, id)
		case b == "msg" && flags == 0x02:
			leaves = append(leaves, id)
		}
	}
	slices.Sort(leaves)
	switch kind {
	case "root":
		return root, psize
	case "branch":
		if len(branch) == 0 {
			t.Fatalf("bucket msg has no branch page (%d leaves)", len(leaves))
		}
		return branch[:1], psize
	}
	if len(leaves) < 6 {
		t.Fatalf("bucket msg has %d leaf pages", len(leaves))
	}
	return []uint64{leaves[1], leaves[len(leaves)/2], leaves[len(leaves)-2]}, psize
}

func garble(t *testing.T, path string, pages []uint64, psize int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rng := rand.New(rand.NewPCG(3, uint64(len(pages))))
	junk := make([]byte, psize)
	for _, p := range pages {
		for i := range junk {
			junk[i] = byte(rng.Uint32())
		}
		if _, err := f.WriteAt(junk, int64(p)*psize); err != nil {
			t.Fatal(err)
		}
	}
}

var lostLine = regexp.MustCompile(`lost: (\d+) messages`)

// TestDamagedQueueSalvaged: a queue.db of 150 deferred messages with its
// root page, a branch page or three scattered leaf pages garbled. serve
// either refuses with one clear message or runs and names every message
// it cannot deliver (never a panic); `db check` fails cleanly naming the
// page; `db salvage -replace` copies the readable messages into a new
// queue.db, and the daemon started on it delivers all of them to the sink.
func TestDamagedQueueSalvaged(t *testing.T) {
	for _, kind := range []string{"root", "branch", "leaves"} {
		t.Run(kind, func(t *testing.T) {
			const n = 150
			d, sink, seqs := queueSome(t, n, 2048)
			pages, psize := damagedPages(t, d.QueueDB(), kind)
			garble(t, d.QueueDB(), pages, psize)

			logBefore := len(d.Log())
			if err := d.TryStart(10 * time.Second); err != nil {
				out := d.Log()[logBefore:]
				if c := crashed(out); c != "" {
					t.Fatalf("serve CRASHED on a damaged %s: %s", kind, c)
				}
				if !strings.Contains(out, "damaged") || !strings.Contains(out, "holdfast db salvage") {
					t.Errorf("serve refused without naming the damage and salvage:\n%s", out)
				}
				t.Logf("serve refused: %s", strings.TrimSpace(lastLine(out)))
			} else {
				sink.SetTempFail(nil)
				etrnOnce(d, "sink.test")
				damaged := func() int {
					return strings.Count(d.Log()[logBefore:], "message cannot be delivered: queue.db is damaged")
				}
				if kind == "leaves" {
					// Every message gets its outcome: delivered, or logged as
					// damaged. Stopped before, the rest would count as lost.
					sink.WaitFor(time.Minute, func() bool { return n-countMissing(sink, seqs)+damaged() >= n })
				} else {
					sink.WaitFor(5*time.Second, func() bool { return countMissing(sink, seqs) < n })
				}
				if !d.Running() {
					t.Fatalf("serve died on a damaged %s:\n%s", kind, d.LogTail(30))
				}
				if err := d.Stop(); err != nil {
					t.Errorf("stop: %v", err)
				}
				out := d.Log()[logBefore:]
				if c := crashed(out); c != "" {
					t.Fatalf("serve CRASHED on a damaged %s: %s", kind, c)
				}
				logged := damaged()
				t.Logf("serve ran: delivered %d, %d messages logged as damaged", n-countMissing(sink, seqs), logged)
				if n-countMissing(sink, seqs)+logged < n && kind == "leaves" {
					t.Errorf("%d messages neither delivered nor logged as damaged", n-(n-countMissing(sink, seqs)+logged))
				}
				sink.SetTempFail(nil)
			}
			dbCheckFails(t, d, "damaged "+kind)

			out, errOut, code := d.Command(time.Minute, "db", "salvage", "-replace")
			if code != 0 || crashed(out+errOut) != "" {
				t.Fatalf("db salvage: exit %d\n%s%s", code, out, errOut)
			}
			t.Logf("db salvage:\n%s", out)
			lost := 0
			if m := lostLine.FindStringSubmatch(out); m != nil {
				lost, _ = strconv.Atoi(m[1])
			}
			if kind != "leaves" && lost != 0 {
				t.Errorf("salvage lost %d messages of a file whose leaves are intact", lost)
			}
			verifyCheck(t, d)

			already := n - countMissing(sink, seqs)
			sink.SetTempFail(nil)
			d.Start()
			for i := 0; i < 20 && countMissing(sink, seqs) > lost; i++ {
				etrnOnce(d, "sink.test")
				sink.WaitFor(time.Second, func() bool { return countMissing(sink, seqs) <= lost })
			}
			if missing := countMissing(sink, seqs); missing != lost {
				t.Errorf("after salvage %d of %d messages never arrived; salvage reported %d lost", missing, n, lost)
			}
			if err := d.Stop(); err != nil {
				t.Errorf("stop: %v", err)
			}
			t.Logf("%s: %d delivered before salvage, %d after, %d lost", kind, already, n-countMissing(sink, seqs)-already, lost)
		})
	}
}
