package crashtest

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/textproto"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-smtp"
)

// Ledger is the client side's account of every message it tried to send.
type Ledger struct {
	mu sync.Mutex
	// Acked: DATA got 250; seq -> recipients. These must all arrive.
	Acked map[string][]string
	// Unsure: the final dot was sent but no reply came (connection broke,
	// usually a kill). They may or may not have been queued.
	Unsure map[string][]string
	// Refused counts messages that got a 4xx/5xx reply somewhere;
	// refused maps their seq to the reply.
	Refused int
	refused map[string]string
	// Broken counts messages whose connection broke before the final dot.
	Broken int
	// QueueID maps an acked message to the queue ID in its 250 reply.
	QueueID map[string]string
}

func newLedger() *Ledger {
	return &Ledger{Acked: map[string][]string{}, Unsure: map[string][]string{}, QueueID: map[string]string{}}
}

func (l *Ledger) refuse(seq string, reply string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.refused == nil {
		l.refused = map[string]string{}
	}
	l.refused[seq] = reply
	l.Refused++
}

// RefusedSet maps each refused message to the reply it got.
func (l *Ledger) RefusedSet() map[string]string {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make(map[string]string, len(l.refused))
	for k, v := range l.refused {
		out[k] = v
	}
	return out
}

func (l *Ledger) add(kind string, seq string, rcpts []string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch kind {
	case "acked":
		l.Acked[seq] = rcpts
	case "unsure":
		l.Unsure[seq] = rcpts
	default:
		l.Broken++
	}
}

// Snapshot returns copies of the acked and unsure sets and the counters.
func (l *Ledger) Snapshot() (acked, unsure map[string][]string, refused, broken int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	acked = make(map[string][]string, len(l.Acked))
	for k, v := range l.Acked {
		acked[k] = v
	}
	unsure = make(map[string][]string, len(l.Unsure))
	for k, v := range l.Unsure {
		unsure[k] = v
	}
	return acked, unsure, l.Refused, l.Broken
}

// Load drives concurrent SMTP clients against a daemon. Its counters let
// a killer choose its moment: InBody > 0 while some client is writing a
// message body, InCommit > 0 between a final dot and its reply.
type Load struct {
	D       *Daemon
	Ledger  *Ledger
	Domains []string // recipient domains, e.g. sink.test
	Seed    uint64

	InBody   atomic.Int64
	InCommit atomic.Int64
	Sent     atomic.Int64
}

// Run starts n clients and returns when ctx is done and all have stopped.
func (g *Load) Run(ctx context.Context, n int) {
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(id int) {
			defer wg.Done()
			g.client(ctx, id)
		}(i)
	}
	wg.Wait()
}

func (g *Load) client(ctx context.Context, id int) {
	rng := rand.New(rand.NewPCG(g.Seed, uint64(id)))
	n := 0
	for ctx.Err() == nil {
		conn, err := net.DialTimeout("tcp", g.D.Addr(), time.Second)
		if err != nil {
			sleepCtx(ctx, 20*time.Millisecond)
			continue
		}
		conn.SetDeadline(time.Now().Add(30 * time.Second))
		c := smtp.NewClient(conn)
		c.CommandTimeout = 10 * time.Second
		c.SubmissionTimeout = 20 * time.Second
		if err := c.Hello("client.test"); err != nil {
			c.Close()
			sleepCtx(ctx, 20*time.Millisecond)
			continue
		}
		per := 1 + rng.IntN(5)
		for k := 0; k < per && ctx.Err() == nil; k++ {
			n++
			seq := fmt.Sprintf("c%02d-%06d", id, n)
			if !g.send(c, rng, seq) {
				break
			}
		}
		c.Quit()
		c.Close()
	}
}

// send submits one message and records the outcome; it reports whether
// the connection is still usable.
func (g *Load) send(c *smtp.Client, rng *rand.Rand, seq string) bool {
	rcpts := g.recipients(rng)
	if err := c.Mail("sender@client.test", nil); err != nil {
		return g.fail(seq, rcpts, err, false)
	}
	for _, r := range rcpts {
		if err := c.Rcpt(r, nil); err != nil {
			return g.fail(seq, rcpts, err, false)
		}
	}
	w, err := c.Data()
	if err != nil {
		return g.fail(seq, rcpts, err, false)
	}
	g.InBody.Add(1)
	body := message(seq, rcpts, rng)
	for len(body) > 0 {
		k := min(len(body), 8192)
		if _, err = w.Write(body[:k]); err != nil {
			break
		}
		body = body[k:]
	}
	g.InBody.Add(-1)
	if err != nil {
		g.Ledger.add("broken", seq, rcpts)
		return false
	}
	g.InCommit.Add(1)
	resp, err := w.CloseWithResponse()
	g.InCommit.Add(-1)
	g.Sent.Add(1)
	if err == nil {
		g.Ledger.add("acked", seq, rcpts)
		if i := strings.LastIndex(resp.StatusText, "queued as "); i >= 0 {
			g.Ledger.mu.Lock()
			g.Ledger.QueueID[seq] = strings.TrimSpace(resp.StatusText[i+len("queued as "):])
			g.Ledger.mu.Unlock()
		}
		return true
	}
	return g.fail(seq, rcpts, err, true)
}

func (g *Load) fail(seq string, rcpts []string, err error, afterDot bool) bool {
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		g.Ledger.refuse(seq, se.Error())
		return se.Code != 421
	}
	if afterDot {
		g.Ledger.add("unsure", seq, rcpts)
	} else {
		g.Ledger.add("broken", seq, rcpts)
	}
	return false
}

func (g *Load) recipients(rng *rand.Rand) []string {
	n := 1
	if rng.IntN(5) == 0 {
		n = 2 + rng.IntN(2)
	}
	seen := map[string]bool{}
	var out []string
	for len(out) < n {
		r := fmt.Sprintf("u%d@%s", rng.IntN(4), g.Domains[rng.IntN(len(g.Domains))])
		if !seen[r] {
			seen[r] = true
			out = append(out, r)
		}
	}
	return out
}

// message builds a test message: headers with the sequence number, then
// 1-4 KiB of text, or 64-256 KiB for one message in ten (long DATA phases
// for the killer to hit).
func message(seq string, rcpts []string, rng *rand.Rand) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "From: <sender@client.test>\r\nTo: %s\r\n", strings.Join(rcpts, ", "))
	fmt.Fprintf(&b, "Message-ID: <%s@crash.test>\r\n%s: %s\r\nSubject: crash test %s\r\n\r\n", seq, SeqHeader, seq, seq)
	size := 1024 + rng.IntN(3072)
	if rng.IntN(10) == 0 {
		size = 64<<10 + rng.IntN(192<<10)
	}
	line := "The quick brown fox jumps over the lazy dog " + seq + "\r\n"
	for b.Len() < size {
		b.WriteString(line)
	}
	return []byte(b.String())
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// Session is a raw SMTP dialogue for commands go-smtp's client lacks (ETRN)
// and for malformed input.
type Session struct {
	Conn net.Conn
	TP   *textproto.Conn
}

// Dial connects to addr (optionally from local address from, e.g.
// "127.0.0.2") and returns the session and the greeting reply.
func Dial(addr, from string, timeout time.Duration) (*Session, int, string, error) {
	dl := net.Dialer{Timeout: timeout}
	if from != "" {
		dl.LocalAddr = &net.TCPAddr{IP: net.ParseIP(from)}
	}
	conn, err := dl.Dial("tcp", addr)
	if err != nil {
		return nil, 0, "", err
	}
	conn.SetDeadline(time.Now().Add(timeout))
	s := &Session{Conn: conn, TP: textproto.NewConn(conn)}
	code, msg, err := s.Read()
	if err != nil && code == 0 {
		conn.Close()
		return nil, 0, "", err
	}
	return s, code, msg, nil
}

// Read reads one (possibly multi-line) reply. A reply with an unexpected
// code is not an error: err is set only when no reply could be read.
func (s *Session) Read() (int, string, error) {
	code, msg, err := s.TP.ReadResponse(0)
	var pe *textproto.Error
	if errors.As(err, &pe) {
		return pe.Code, pe.Msg, nil
	}
	return code, msg, err
}

// Cmd sends one line and reads the reply.
func (s *Session) Cmd(format string, args ...any) (int, string, error) {
	s.Conn.SetDeadline(time.Now().Add(30 * time.Second))
	if err := s.TP.PrintfLine(format, args...); err != nil {
		return 0, "", err
	}
	return s.Read()
}

// Close says nothing more and closes the connection.
func (s *Session) Close() { s.Conn.Close() }
