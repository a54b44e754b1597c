package store

import (
	"bufio"
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const crashChildEnv = "HOLDFAST_STORE_CRASH_CHILD"

// crashBody is the content enqueued for id: the parent can tell an intact
// body from a torn one without the child telling it anything but the ID.
func crashBody(id ID) []byte {
	return bytes.Repeat([]byte(string(id)+"\r\n"), 1024/14+1)
}

// crashEnqueue queues m with its crashBody: through Spool.Enqueue, the
// journal's path (journal.go), or Store.Enqueue, the direct one.
func crashEnqueue(s *Store, m *Message, spool bool) error {
	if !spool {
		return s.Enqueue(m, crashBody(m.ID))
	}
	c, err := s.Spool(m.ID)
	if err != nil {
		return err
	}
	c.Write(crashBody(m.ID))
	return c.Enqueue(m)
}

// TestCrashChild is the child side of TestCrashKeepsAcknowledged: it
// enqueues from four goroutines until killed, two through the journal
// (Spool) and two directly (Store.Enqueue), and prints "ACK id" after
// each enqueue returned, with fsync on.
func TestCrashChild(t *testing.T) {
	path := os.Getenv(crashChildEnv)
	if path == "" {
		t.Skip("child of TestCrashKeepsAcknowledged only")
	}
	s, err := Open(path, Options{Eligible: eligibleTLD, PolicyKey: "tld", Timeout: 5 * time.Second})
	if err != nil {
		fmt.Println("ERR", err)
		os.Exit(1)
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	deadline := time.Now().Add(20 * time.Second) // bounded even if nobody kills us
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) {
				m := newMsg("u@customer.tld", "v@other.example")
				m.ID = NewID()
				if err := crashEnqueue(s, m, g%2 == 0); err != nil {
					fmt.Println("ERR", err)
					os.Exit(1)
				}
				mu.Lock()
				os.Stdout.WriteString("ACK " + string(m.ID) + "\n")
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	s.Close()
}

// TestCrashKeepsAcknowledged kills an enqueuing child with SIGKILL at
// random moments; after each kill every acknowledged message must be in
// the reopened store with its body intact, and Check must pass.
func TestCrashKeepsAcknowledged(t *testing.T) {
	if os.Getenv(crashChildEnv) != "" {
		t.Skip("in child")
	}
	path := filepath.Join(t.TempDir(), "queue.db")
	r := rand.New(rand.NewPCG(7, 7))
	acked := map[ID]bool{}
	for round := 0; round < 5; round++ {
		cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
		cmd.Env = append(os.Environ(), crashChildEnv+"="+path)
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		lines := make(chan string, 1024)
		go func() {
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				lines <- sc.Text()
			}
			close(lines)
		}()
		// Wait for the first acknowledgement, then kill at a random moment.
		first := true
		kill := time.After(time.Hour)
		n := 0
		for line := range lines {
			if strings.HasPrefix(line, "ERR") {
				t.Fatalf("child: %s", line)
			}
			id, ok := strings.CutPrefix(line, "ACK ")
			if !ok {
				continue
			}
			acked[ID(id)] = true
			n++
			if first {
				first = false
				kill = time.After(time.Duration(50+r.IntN(400)) * time.Millisecond)
			}
			select {
			case <-kill:
				cmd.Process.Signal(syscall.SIGKILL)
				kill = time.After(time.Hour)
			default:
			}
		}
		cmd.Wait()
		s, err := Open(path, Options{Eligible: eligibleTLD, PolicyKey: "tld", NoSync: true})
		if err != nil {
			t.Fatalf("round %d: reopen: %v", round, err)
		}
		for id := range acked {
			b, err := s.Body(id)
			if err != nil || !bytes.Equal(b, crashBody(id)) {
				s.Close()
				t.Fatalf("round %d: acknowledged %s: %v (body intact: %v)", round, id, err, bytes.Equal(b, crashBody(id)))
			}
		}
		if err := s.Check(); err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		s.Close()
		t.Logf("round %d: %d acknowledged in this round, %d in all, %d replayed from the journal", round, n, len(acked), s.Report().Replayed)
	}
}
