package delivery

import (
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/holdfast-mta/holdfast/store"
)

// dnsServer is an authoritative DNS server on 127.0.0.1 (UDP) serving
// zone, built with miekg/dns; it counts the questions it gets.
type dnsServer struct {
	Addr string
	mu   sync.Mutex
	rrs  []dns.RR
	asks map[string]int // "name TYPE"
}

func newDNSServer(t *testing.T, records ...string) *dnsServer {
	t.Helper()
	s := &dnsServer{asks: map[string]int{}}
	for _, r := range records {
		rr, err := dns.NewRR(r)
		if err != nil {
			t.Fatalf("record %q: %v", r, err)
		}
		s.rrs = append(s.rrs, rr)
	}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.Addr = pc.LocalAddr().String()
	started := make(chan struct{})
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(s.serve), NotifyStartedFunc: func() { close(started) }}
	go srv.ActivateAndServe()
	<-started
	t.Cleanup(func() { srv.Shutdown() })
	return s
}

func (s *dnsServer) serve(w dns.ResponseWriter, r *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(r)
	m.Authoritative = true
	s.mu.Lock()
	for _, q := range r.Question {
		s.asks[strings.ToLower(q.Name)+" "+dns.TypeToString[q.Qtype]]++
		exists := false
		for _, rr := range s.rrs {
			h := rr.Header()
			if !strings.EqualFold(h.Name, q.Name) {
				continue
			}
			exists = true
			if h.Rrtype == q.Qtype {
				m.Answer = append(m.Answer, rr)
			}
		}
		if !exists {
			m.Rcode = dns.RcodeNameError
		}
	}
	s.mu.Unlock()
	w.WriteMsg(m)
}

func (s *dnsServer) asked(q string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.asks[q]
}

// MX records are tried by preference: mx1 (preference 10) refuses, mx2
// (20) takes the mail. A domain without MX falls back to its A record, a
// [host] skips MX, a name that does not exist bounces with 5.4.4.
func TestMXLookup(t *testing.T) {
	var ds *dnsServer
	e := newEnv(t, func(e *env) {
		ds = newDNSServer(t,
			"mx.test. 60 IN MX 20 mx2.mx.test.",
			"mx.test. 60 IN MX 10 mx1.mx.test.",
			"mx1.mx.test. 60 IN A 127.0.0.2",
			"mx2.mx.test. 60 IN A 127.0.0.1",
			"plain.test. 60 IN A 127.0.0.1",
		)
		e.o.DNS = true
		e.o.DNSServer = ds.Addr
		e.o.Port = e.mta.Port
		e.tm["literal.test"] = "smtp:[mx2.mx.test]"
	})
	id := e.enqueue("alice@origin.test", "bob@mx.test")
	e.waitGone(id)
	if !strings.Contains(e.logs.String(), fmt.Sprintf(`"relay":"mx2.mx.test[127.0.0.1]:%d"`, e.mta.Port)) {
		t.Errorf("not relayed through mx2:\n%s", e.logs.String())
	}
	id = e.enqueue("alice@origin.test", "carol@plain.test")
	e.waitGone(id)
	id = e.enqueue("alice@origin.test", "dave@literal.test")
	e.waitGone(id)
	if n := len(e.mta.Wait(3, 5*time.Second)); n != 3 {
		t.Fatalf("received %d of 3", n)
	}
	if ds.asked("mx2.mx.test. MX") != 0 || ds.asked("mx2.mx.test. A") == 0 {
		t.Errorf("[host] asked MX %d, A %d", ds.asked("mx2.mx.test. MX"), ds.asked("mx2.mx.test. A"))
	}
	if ds.asked("plain.test. MX") == 0 {
		t.Errorf("plain.test MX not asked")
	}
	id = e.enqueue("alice@origin.test", "erin@nowhere.test")
	m := e.waitMsg(id, "nxdomain", func(m *store.Message) bool { return m == nil || m.Recipients[0].State == store.RcptBounced })
	if m != nil {
		t.Fatalf("still queued: %+v", m.Recipients[0])
	}
	d := parseDSN(t, e.origin.Wait(1, 5*time.Second)[0].Data)
	checkField(t, d.rcpts[0], "Status", "5.4.4")
	if !strings.Contains(d.rcpts[0].Get("Diagnostic-Code"), "Host or domain name not found") {
		t.Errorf("diagnostic %q", d.rcpts[0].Get("Diagnostic-Code"))
	}
}

// All MX hosts down: the whole hop is dead, the recipient deferred with
// the last connection error.
func TestAllMXDown(t *testing.T) {
	e := newEnv(t, func(e *env) {
		ds := newDNSServer(t,
			"down.test. 60 IN MX 10 a.down.test.",
			"down.test. 60 IN MX 20 b.down.test.",
			"a.down.test. 60 IN A 127.0.0.2",
			"b.down.test. 60 IN A 127.0.0.3",
		)
		e.o.DNS, e.o.DNSServer, e.o.Port = true, ds.Addr, e.mta.Port
	})
	id := e.enqueue("alice@origin.test", "bob@down.test")
	m := e.waitAttempts(id, 1)
	if r := m.Recipients[0]; !strings.Contains(r.Reply, "connect to b.down.test[127.0.0.3]") || r.DSN != "4.4.1" {
		t.Fatalf("%+v", r)
	}
	if d, _ := e.s.Dests(); d["smtp:down.test"].DeadUntil.IsZero() {
		t.Fatalf("hop not dead: %+v", d)
	}
}
