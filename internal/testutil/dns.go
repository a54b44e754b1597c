package testutil

import (
	"net"
	"strings"
	"sync"
	"testing"

	"github.com/miekg/dns"
)

// DNS is an authoritative DNS server on 127.0.0.1 built with miekg/dns,
// answering over UDP and TCP on the same port. It serves the records it
// is given; a name it has no record for is NXDOMAIN, a name with records
// of other types only is NODATA, both with an SOA (TTL 60) in the
// authority section. Names can be made to fail (SERVFAIL) or to be
// truncated over UDP. It counts the questions it gets. In the role of a
// validating resolver it sets the AD bit on the answers about names made
// Secure, when the question asked for it (AD or DO, RFC 6840 sec 5.7).
type DNS struct {
	// Addr is "127.0.0.1:port", for dns_resolver.
	Addr string

	mu       sync.Mutex
	rrs      []dns.RR
	fail     map[string]bool
	truncate map[string]bool
	secure   map[string]bool
	asks     map[string]int // "name TYPE" (lower case, absolute name)
	tcp      int
}

// NewDNS starts a server with the records (zone-file syntax, e.g.
// "mx.test. 300 IN A 127.0.0.1"); it stops when the test ends.
func NewDNS(t testing.TB, records ...string) *DNS {
	t.Helper()
	s := &DNS{fail: map[string]bool{}, truncate: map[string]bool{}, secure: map[string]bool{}, asks: map[string]int{}}
	s.Add(t, records...)
	pc, ln := listenUDPTCP(t)
	s.Addr = pc.LocalAddr().String()
	for _, srv := range []*dns.Server{
		{PacketConn: pc, Handler: dns.HandlerFunc(s.serve)},
		{Listener: ln, Handler: dns.HandlerFunc(s.serve)},
	} {
		started := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		go srv.ActivateAndServe()
		<-started
		t.Cleanup(func() { srv.Shutdown() })
	}
	return s
}

// listenUDPTCP binds UDP and TCP on one loopback port; the TCP port may
// be taken, so a few ports are tried.
func listenUDPTCP(t testing.TB) (net.PacketConn, net.Listener) {
	t.Helper()
	var last error
	for range 20 {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ln, err := net.Listen("tcp", pc.LocalAddr().String())
		if err == nil {
			return pc, ln
		}
		pc.Close()
		last = err
	}
	t.Fatalf("no loopback port free for UDP and TCP: %v", last)
	return nil, nil
}

// Add adds records.
func (s *DNS) Add(t testing.TB, records ...string) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range records {
		rr, err := dns.NewRR(r)
		if err != nil {
			t.Fatalf("record %q: %v", r, err)
		}
		s.rrs = append(s.rrs, rr)
	}
}

// Fail makes every question about name (absolute, "x.test.") SERVFAIL.
func (s *DNS) Fail(name string) {
	s.mu.Lock()
	s.fail[strings.ToLower(name)] = true
	s.mu.Unlock()
}

// Secure makes the answers about names (absolute, "x.test.") come with
// the AD bit, as a validating resolver's answers for a signed zone.
func (s *DNS) Secure(names ...string) {
	s.mu.Lock()
	for _, n := range names {
		s.secure[strings.ToLower(n)] = true
	}
	s.mu.Unlock()
}

// Truncate makes UDP answers about name come back truncated (TC), so
// the client must ask again over TCP.
func (s *DNS) Truncate(name string) {
	s.mu.Lock()
	s.truncate[strings.ToLower(name)] = true
	s.mu.Unlock()
}

// Asked is how many times a question ("name. TYPE") was asked.
func (s *DNS) Asked(q string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	name, typ, _ := strings.Cut(q, " ")
	return s.asks[strings.ToLower(name)+" "+typ]
}

// TCP is how many questions came over TCP.
func (s *DNS) TCP() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.tcp
}

func (s *DNS) serve(w dns.ResponseWriter, r *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(r)
	m.Authoritative = true
	_, overTCP := w.RemoteAddr().(*net.TCPAddr)
	s.mu.Lock()
	if overTCP {
		s.tcp++
	}
	for _, q := range r.Question {
		name := strings.ToLower(q.Name)
		s.asks[name+" "+dns.TypeToString[q.Qtype]]++
		switch {
		case s.fail[name]:
			m.Rcode = dns.RcodeServerFailure
		case s.truncate[name] && !overTCP:
			m.Truncated = true
		default:
			s.answer(m, q)
			do := r.IsEdns0() != nil && r.IsEdns0().Do()
			m.AuthenticatedData = s.secure[name] && (r.AuthenticatedData || do)
		}
	}
	s.mu.Unlock()
	w.WriteMsg(m)
}

// answer fills in the records for q, or NXDOMAIN / NODATA with an SOA.
func (s *DNS) answer(m *dns.Msg, q dns.Question) {
	exists := false
	for _, rr := range s.rrs {
		h := rr.Header()
		if !strings.EqualFold(h.Name, q.Name) {
			continue
		}
		exists = true
		if h.Rrtype == q.Qtype {
			m.Answer = append(m.Answer, rr)
		} else if c, ok := rr.(*dns.CNAME); ok { // chase, as a recursive server does
			m.Answer = append(m.Answer, rr)
			s.answer(m, dns.Question{Name: c.Target, Qtype: q.Qtype, Qclass: q.Qclass})
			return
		}
	}
	if len(m.Answer) > 0 {
		return
	}
	if !exists {
		m.Rcode = dns.RcodeNameError
	}
	soa, _ := dns.NewRR(". 60 IN SOA ns.test. hostmaster.test. 1 3600 600 86400 60")
	m.Ns = append(m.Ns, soa)
}
