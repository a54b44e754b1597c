package relaytest

import (
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/holdfast-mta/holdfast/test/crashtest"
)

// slowResult is what one slow client saw.
type slowResult struct {
	held    time.Duration // from the greeting to the server's hang-up
	last    string        // the server's last line
	refused string        // the greeting, when it was not 220
	err     error
}

// slowClient connects from address from, then sends an endless command
// one byte every gap until the server hangs up; ready is told once the
// greeting came.
func slowClient(addr, from string, gap time.Duration, ready func(bool), done chan<- slowResult) {
	s, code, msg, err := crashtest.Dial(addr, from, 10*time.Second)
	if err != nil {
		ready(false)
		done <- slowResult{err: fmt.Errorf("dial from %s: %v", from, err)}
		return
	}
	if code != 220 {
		s.Close()
		ready(false)
		done <- slowResult{refused: fmt.Sprintf("%d %s", code, msg)}
		return
	}
	defer s.Close()
	ready(true)
	start := time.Now()
	s.Conn.SetDeadline(start.Add(60 * time.Second))
	closed := make(chan string, 1)
	go func() {
		last := ""
		for {
			code, msg, err := s.Read()
			if err != nil {
				closed <- last
				return
			}
			last = fmt.Sprintf("%d %s", code, msg)
		}
	}()
	line := "EHLO " + strings.Repeat("a", 1000)
	for i := 0; ; i++ {
		if _, err := s.Conn.Write([]byte{line[i%len(line)]}); err != nil {
			break
		}
		select {
		case last := <-closed:
			done <- slowResult{held: time.Since(start), last: last}
			return
		case <-time.After(gap):
		}
	}
	select {
	case last := <-closed:
		done <- slowResult{held: time.Since(start), last: last}
	case <-time.After(30 * time.Second):
		done <- slowResult{err: fmt.Errorf("write failed but no hang-up")}
	}
}

// TestSlowClientsCutAtDeadline reproduces "1,000 connections sending 1
// byte/s with smtpd_timeout = 10s" at CI scale: 200 clients from 200
// addresses outside mynetworks (so per-client limits do not help) each
// trickle an endless command at one byte a second. With the per-request
// deadline every one of them is cut at smtpd_timeout (3 s here), and
// while they hold their slots a client from mynetworks gets 220 and its
// message is accepted. The second run shows stress mode: with
// smtpd_timeout = ${stress?{2}:{60}}s the clients that came before the
// slots were 80% busy are cut after 2 s too, not 60 s.
//
// HOLDFAST_SLOW_CLIENTS=1000 adds the attack at full scale against the
// default smtpd_connection_limit (1,000) at smtpd_timeout = 10s: the
// outside clients get 900 slots (the rest is kept for mynetworks) and
// the others 421.
func TestSlowClientsCutAtDeadline(t *testing.T) {
	t.Parallel()
	runs := []slowRun{
		{name: "fixed", param: "3s", timeout: 3 * time.Second, n: 200, limit: 250},
		{name: "stress", param: "${stress?{2}:{60}}s", timeout: 2 * time.Second, n: 200, limit: 250},
	}
	if v := os.Getenv("HOLDFAST_SLOW_CLIENTS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 60000 {
			t.Fatalf("HOLDFAST_SLOW_CLIENTS=%q: want a number of clients", v)
		}
		runs = append(runs, slowRun{name: "full", param: "10s", timeout: 10 * time.Second, n: n, limit: 1000})
	}
	for _, r := range runs {
		t.Run(r.name, func(t *testing.T) {
			t.Parallel()
			slowClients(t, r)
		})
	}
}

// slowRun is one slow-client attack: n clients against
// smtpd_connection_limit = limit at smtpd_timeout = param.
type slowRun struct {
	name, param string
	timeout     time.Duration
	n, limit    int
}

func slowClients(t *testing.T, r slowRun) {
	n, param, timeout := r.n, r.param, r.timeout
	served := min(n, r.limit-r.limit/10) // outside clients get 90% of the slots
	sink := crashtest.NewSink(t)
	d := newRelay(t, sink, map[string]string{
		"smtpd_timeout":          param,
		"smtpd_connection_limit": strconv.Itoa(r.limit), // 200 of 250: stress
		"smtpd_peername_lookup":  "no",                  // no DNS here: the PTR lookups would wait for their timeout
	})
	var wg sync.WaitGroup
	greeted := make(chan bool, n)
	done := make(chan slowResult, n)
	start := time.Now()
	for i := range n {
		from := fmt.Sprintf("127.%d.%d.%d", 1+i/62500, 1+i/250%250, 1+i%250)
		wg.Add(1)
		go func() {
			defer wg.Done()
			slowClient(d.Addr(), from, time.Second, func(ok bool) { greeted <- ok }, done)
		}()
	}
	in := 0
	for range n {
		if <-greeted {
			in++
		}
	}
	if in != served {
		t.Errorf("%d of %d slow clients greeted, want %d", in, n, served)
	}
	allIn := time.Since(start)

	// They hold their slots: a client from mynetworks is served at once.
	t0 := time.Now()
	s := dial(t, d, "127.0.0.2")
	greet := time.Since(t0)
	expect(t, s, "EHLO customer.example", 250, "")
	expect(t, s, "MAIL FROM:<a@customer.example>", 250, "")
	expect(t, s, "RCPT TO:<user@sink.test>", 250, "")
	expect(t, s, "DATA", 354, "")
	expect(t, s, crashtest.SeqHeader+": during-the-attack\r\nSubject: x\r\n\r\nhello\r\n.", 250, "2.0.0")
	expect(t, s, "QUIT", 221, "")
	accepted := time.Since(t0)

	wg.Wait()
	close(done)
	var held []time.Duration
	lasts := map[string]int{}
	for r := range done {
		switch {
		case r.err != nil:
			t.Errorf("slow client: %v", r.err)
		case r.refused != "":
			lasts["refused: "+r.refused]++
		default:
			held = append(held, r.held)
			lasts[r.last]++
		}
	}
	sort.Slice(held, func(i, j int) bool { return held[i] < held[j] })
	if len(held) != served || served == 0 {
		t.Fatalf("%d of %d slow clients reported a hang-up, want %d", len(held), n, served)
	}
	p50, worst := held[len(held)/2], held[len(held)-1]
	t.Logf("%d slow clients (1 byte/s) at smtpd_connection_limit = %d: %d greeted within %v, held a slot p50 %v, max %v at smtpd_timeout = %s; last lines %v; mynetworks client greeted after %v, message accepted after %v",
		n, r.limit, in, allIn.Round(time.Millisecond), p50.Round(10*time.Millisecond), worst.Round(10*time.Millisecond), param, lasts,
		greet.Round(time.Millisecond), accepted.Round(time.Millisecond))
	if worst > timeout+3*time.Second {
		t.Errorf("a slow client held its slot %v, want about smtpd_timeout = %v", worst, timeout)
	}
	if lasts["421 4.4.2 relay.test Error: timeout exceeded"] != served {
		t.Errorf("last lines %v, want 421 4.4.2 ... timeout exceeded for all %d served", lasts, served)
	}
	if n > served && lasts["refused: 421 4.7.0 relay.test Error: too many connections"] != n-served {
		t.Errorf("last lines %v, want 421 4.7.0 ... too many connections for the %d not served", lasts, n-served)
	}
	if !sink.WaitFor(30*time.Second, func() bool { return sink.Total() >= 1 }) {
		t.Errorf("the message accepted during the attack was not delivered")
	}
}
