package wal

import (
	"bufio"
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const crashChildEnv = "HOLDFAST_WAL_CRASH_CHILD"

// crashData is the record a child appends for token.
func crashData(token string) []byte {
	return bytes.Repeat([]byte(token+";"), 1024/(len(token)+1)+1)[:1024]
}

// TestCrashChild is the child side of TestCrashKeepsAcknowledged: it
// opens the log with the applied Seq it is given, appends from four
// goroutines until killed, and prints "ACK seq token" after each Append
// returned and "REL seq" before each Release (the parent, which applies
// nothing, treats a printed Seq as applied).
func TestCrashChild(t *testing.T) {
	arg := os.Getenv(crashChildEnv)
	if arg == "" {
		t.Skip("child of TestCrashKeepsAcknowledged only")
	}
	path, s, _ := strings.Cut(arg, ",")
	applied, _ := strconv.ParseUint(s, 10, 64)
	l, recs, err := Open(path, 256<<10, applied)
	if err != nil {
		fmt.Println("ERR", err)
		os.Exit(1)
	}
	var mu sync.Mutex
	say := func(f string, a ...any) {
		mu.Lock()
		fmt.Printf(f+"\n", a...)
		mu.Unlock()
	}
	if len(recs) > 0 {
		applied = recs[len(recs)-1].Seq
		say("REL %d", applied)
		l.Release(applied)
	}
	k := newTracker(applied, 20)
	var wg sync.WaitGroup
	deadline := time.Now().Add(20 * time.Second) // bounded even if nobody kills us
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; time.Now().Before(deadline); i++ {
				token := fmt.Sprintf("%d.%d.%d", os.Getpid(), g, i)
				seq, err := l.Append(crashData(token))
				if err == ErrFull {
					time.Sleep(time.Millisecond) // the others release
					continue
				}
				if err != nil {
					say("ERR %v", err)
					os.Exit(1)
				}
				say("ACK %d %s", seq, token)
				rel := k.ack(seq, crashData(token))
				say("REL %d", rel)
				l.Release(rel)
			}
		}()
	}
	wg.Wait()
	l.Close()
}

// TestCrashKeepsAcknowledged kills an appending child with SIGKILL at
// random moments; after each kill the log must open with the applied Seq
// the child announced and hold every record acknowledged after it.
func TestCrashKeepsAcknowledged(t *testing.T) {
	if os.Getenv(crashChildEnv) != "" {
		t.Skip("in child")
	}
	path := filepath.Join(t.TempDir(), "j")
	r := rand.New(rand.NewPCG(7, 7))
	var applied uint64
	for round := range 4 {
		acked := map[uint64]string{}
		cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
		cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s,%d", crashChildEnv, path, applied))
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(out)
		kill := time.Now().Add(time.Hour)
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			switch {
			case len(f) == 3 && f[0] == "ACK":
				seq, _ := strconv.ParseUint(f[1], 10, 64)
				acked[seq] = f[2]
				if len(acked) == 1 {
					kill = time.Now().Add(time.Duration(50+r.IntN(250)) * time.Millisecond)
				}
			case len(f) == 2 && f[0] == "REL":
				seq, _ := strconv.ParseUint(f[1], 10, 64)
				applied = max(applied, seq)
			case len(f) > 0 && f[0] == "ERR":
				cmd.Process.Kill()
				t.Fatalf("child: %s", sc.Text())
			}
			if time.Now().After(kill) {
				cmd.Process.Signal(syscall.SIGKILL)
				kill = time.Now().Add(time.Hour)
			}
		}
		cmd.Wait()
		l, recs, err := Open(path, 256<<10, applied)
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		l.Close()
		got := map[uint64][]byte{}
		for _, rec := range recs {
			got[rec.Seq] = rec.Data
		}
		kept := 0
		for seq, token := range acked {
			if seq <= applied {
				continue
			}
			kept++
			if !bytes.Equal(got[seq], crashData(token)) {
				t.Fatalf("round %d: acknowledged record %d (applied %d) missing or changed", round, seq, applied)
			}
		}
		t.Logf("round %d: %d acknowledged, applied %d, %d acknowledged not applied, %d replayed", round, len(acked), applied, kept, len(recs))
	}
}
