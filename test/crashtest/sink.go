package crashtest

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/textproto"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// SeqHeader names the header that identifies a test message. The sink
// counts deliveries per (sequence, recipient).
const SeqHeader = "X-Seq"

// Sink is a go-smtp server on 127.0.0.1 that stands in for the customer's
// MTA. Unlike internal/testutil's MTA it keeps no message bodies, only who
// got what when, so that a ten-minute soak stays small.
type Sink struct {
	Addr string

	srv  *smtp.Server
	l    net.Listener
	done chan struct{}

	mu       sync.Mutex
	got      map[string][]Delivery // seq + " " + rcpt -> deliveries
	attempts map[string]int        // seq -> DATA attempts, including refused ones
	total    int
	// TempFail, when set, is asked after each DATA: a non-nil reply is
	// sent instead of 250 and the delivery is not counted.
	tempFail func(seq string, attempt int) *smtp.SMTPError
	delay    func() time.Duration
	onData   func(seq string)
	conns    int
	notify   chan struct{}
}

// NewSink starts a sink on 127.0.0.1:0; it is closed when the test ends.
func NewSink(t testing.TB) *Sink {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &Sink{
		Addr:     l.Addr().String(),
		l:        l,
		got:      map[string][]Delivery{},
		attempts: map[string]int{},
		done:     make(chan struct{}),
		notify:   make(chan struct{}, 1),
	}
	s.srv = smtp.NewServer(smtp.BackendFunc(func(c *smtp.Conn) (smtp.Session, error) {
		s.mu.Lock()
		s.conns++
		s.mu.Unlock()
		return &sinkSession{s: s}, nil
	}))
	s.srv.Domain = "sink.test"
	s.srv.ReadTimeout = 30 * time.Second
	s.srv.WriteTimeout = 30 * time.Second
	s.srv.MaxMessageBytes = 64 << 20
	s.srv.ErrorLog = quietLog{}
	go func() {
		defer close(s.done)
		s.srv.Serve(l)
	}()
	t.Cleanup(s.Close)
	return s
}

// Close stops the sink. It closes the listener itself too: a Close that
// comes before Serve has registered the listener (a test that fails at
// once) would otherwise leave Serve in Accept for ever.
func (s *Sink) Close() {
	s.srv.Close()
	s.l.Close()
	<-s.done
}

// SetTempFail installs (or with nil removes) the refusal policy.
func (s *Sink) SetTempFail(f func(seq string, attempt int) *smtp.SMTPError) {
	s.mu.Lock()
	s.tempFail = f
	s.mu.Unlock()
}

// SetDelay makes each DATA wait f() before its reply (nil: no wait).
func (s *Sink) SetDelay(f func() time.Duration) {
	s.mu.Lock()
	s.delay = f
	s.mu.Unlock()
}

// OnData calls f when the final dot of a message has been read, before
// the reply (f runs in the session's goroutine, outside the lock).
func (s *Sink) OnData(f func(seq string)) {
	s.mu.Lock()
	s.onData = f
	s.mu.Unlock()
}

// Count is how many times (seq, rcpt) was delivered.
func (s *Sink) Count(seq, rcpt string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.got[seq+" "+rcpt])
}

// Delivery is one complete message the sink accepted for a recipient.
type Delivery struct {
	At      time.Time // when the final dot was read, before any delay and the reply
	QueueID string    // from holdfast's Received: header ("... id QUEUEID ...")
}

// Deliveries returns the deliveries of (seq, rcpt) in arrival order.
func (s *Sink) Deliveries(seq, rcpt string) []Delivery {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Delivery(nil), s.got[seq+" "+rcpt]...)
}

// Keys returns every (seq, rcpt) delivered, as "seq rcpt".
func (s *Sink) Keys() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	keys := make([]string, 0, len(s.got))
	for k := range s.got {
		keys = append(keys, k)
	}
	return keys
}

// Total is the number of deliveries (messages x recipients) counted.
func (s *Sink) Total() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.total
}

// Attempts is the number of DATA commands completed, refused or not.
func (s *Sink) Attempts() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, a := range s.attempts {
		n += a
	}
	return n
}

// Conns is the number of connections the sink accepted.
func (s *Sink) Conns() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.conns
}

// WaitFor polls until done() is true or d passed; it reports done().
func (s *Sink) WaitFor(d time.Duration, done func() bool) bool {
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for !done() {
		select {
		case <-s.notify:
		case <-tick.C:
		case <-deadline.C:
			return done()
		}
	}
	return true
}

type quietLog struct{}

func (quietLog) Printf(string, ...any) {}
func (quietLog) Println(...any)        {}

type sinkSession struct {
	s     *Sink
	rcpts []string
}

func (x *sinkSession) Reset()        { x.rcpts = nil }
func (x *sinkSession) Logout() error { return nil }

func (x *sinkSession) Mail(string, *smtp.MailOptions) error {
	x.rcpts = nil
	return nil
}

func (x *sinkSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	x.rcpts = append(x.rcpts, to)
	return nil
}

func (x *sinkSession) Data(r io.Reader) error {
	seq, qid, err := readSeq(r)
	if err != nil {
		return err
	}
	end := time.Now()
	s := x.s
	s.mu.Lock()
	s.attempts[seq]++
	attempt := s.attempts[seq]
	tf, delay, hook := s.tempFail, s.delay, s.onData
	s.mu.Unlock()
	if hook != nil {
		hook(seq)
	}
	if delay != nil {
		time.Sleep(delay())
	}
	if tf != nil {
		if reply := tf(seq, attempt); reply != nil {
			return reply
		}
	}
	s.mu.Lock()
	for _, rc := range x.rcpts {
		k := seq + " " + rc
		s.got[k] = append(s.got[k], Delivery{At: end, QueueID: qid})
		s.total++
	}
	s.mu.Unlock()
	select {
	case s.notify <- struct{}{}:
	default:
	}
	return nil
}

// receivedID finds the queue ID in holdfast's Received: header.
var receivedID = regexp.MustCompile(`\bwith [A-Z]+ id ([0-9A-Za-z]+)`)

// readSeq reads a message to its end and returns its X-Seq header value
// and the queue ID of the topmost Received: header. A message cut off
// before its final dot (the daemon died while sending it) is an error: it
// was not delivered.
func readSeq(r io.Reader) (seq, qid string, err error) {
	br := bufio.NewReader(r)
	head, _ := br.Peek(512)
	head = append([]byte(nil), head...)
	hdr, herr := textproto.NewReader(br).ReadMIMEHeader()
	n, err := io.Copy(io.Discard, br)
	if err != nil {
		return "", "", err
	}
	if rcv := hdr.Values("Received"); len(rcv) > 0 {
		if m := receivedID.FindStringSubmatch(rcv[0]); m != nil {
			qid = m[1]
		}
	}
	seq = strings.TrimSpace(hdr.Get(SeqHeader))
	if seq == "" {
		// Keep the evidence: a complete message without the header is
		// either not ours or damaged.
		seq = fmt.Sprintf("no-%s-header(%v, %d more bytes): %q", SeqHeader, herr, n, head)
	}
	return seq, qid, nil
}
