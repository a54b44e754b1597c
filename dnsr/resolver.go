// Package dnsr is holdfast's DNS resolver, shared by the SMTP server
// (client name, DNSBL and domain checks) and delivery (MX and address
// lookups). By default it asks the name servers of /etc/resolv.conf, as
// Postfix does through the system resolver; with dns_resolver = host:port
// every question goes to that one server instead.
//
// Answers are cached for their TTL (negative answers for the SOA minimum,
// RFC 2308 sec 5). A lookup's failure says whether it is permanent (the
// name does not exist, NXDOMAIN, or has no record of that type) or
// temporary (SERVFAIL, REFUSED, timeouts, network errors), because the
// SMTP server must answer a temporary failure with a 4XX reply and never
// take it as "not listed".
package dnsr

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// Options configure a Resolver. The zero value asks the servers of
// /etc/resolv.conf.
type Options struct {
	// Server is dns_resolver: "host:port" (or a bare host, port 53) of
	// the one server every question is sent to; "" = the system's
	// servers.
	Server string
	// ConfFile is the resolv.conf read when Server is empty
	// ("" = /etc/resolv.conf).
	ConfFile string
	// HostsFile is read by AddrName and HostAddrs before the DNS, as the
	// system resolver does ("" = /etc/hosts; "-" = none).
	HostsFile string
	// Timeout is the wait for one answer from one server; 0 = the
	// resolv.conf timeout (5s).
	Timeout time.Duration
	// Attempts is how many rounds over the servers are made; 0 = the
	// resolv.conf attempts (2).
	Attempts int
	// CacheSize bounds the cached answers (0 = 10000).
	CacheSize int
	// MaxTTL caps how long any answer is kept (0 = one day).
	MaxTTL time.Duration
	// Now is the clock of the cache; nil = time.Now.
	Now func() time.Time
}

// Resolver asks DNS questions over UDP (TCP when the answer is
// truncated) and caches the answers. It is safe for concurrent use.
type Resolver struct {
	servers  []string
	timeout  time.Duration
	attempts int
	cache    *cache
	hosts    *hosts
	system   bool // the servers are resolv.conf's (no dns_resolver)

	mu       sync.Mutex
	inflight map[string]*call
}

// call is one question being asked; concurrent askers of the same
// question wait for it instead of asking again.
type call struct {
	done chan struct{}
	ans  answer
}

// New builds a resolver. A missing resolv.conf means a server on the
// local host, as the C library assumes.
func New(o Options) (*Resolver, error) {
	r := &Resolver{timeout: o.Timeout, attempts: o.Attempts, inflight: map[string]*call{}}
	if o.Server != "" {
		s, err := serverAddr(o.Server)
		if err != nil {
			return nil, err
		}
		r.servers = []string{s}
	} else if err := r.readConf(o.ConfFile); err != nil {
		return nil, err
	} else {
		r.system = true
	}
	if r.timeout <= 0 {
		r.timeout = 5 * time.Second
	}
	if r.attempts <= 0 {
		r.attempts = 2
	}
	if o.MaxTTL <= 0 {
		o.MaxTTL = 24 * time.Hour
	}
	if o.CacheSize <= 0 {
		o.CacheSize = 10000
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	r.cache = newCache(o.CacheSize, o.MaxTTL, o.Now)
	switch o.HostsFile {
	case "":
		r.hosts = readHosts("/etc/hosts")
	case "-":
		r.hosts = readHosts("")
	default:
		r.hosts = readHosts(o.HostsFile)
	}
	return r, nil
}

// readConf reads the servers, timeout and attempts from resolv.conf.
func (r *Resolver) readConf(file string) error {
	if file == "" {
		file = "/etc/resolv.conf"
	}
	cc, err := dns.ClientConfigFromFile(file)
	if errors.Is(err, os.ErrNotExist) {
		r.servers = []string{"127.0.0.1:53", "[::1]:53"}
		return nil
	}
	if err != nil {
		return fmt.Errorf("dnsr: %s: %w", file, err)
	}
	for _, s := range cc.Servers {
		r.servers = append(r.servers, net.JoinHostPort(s, cc.Port))
	}
	if len(r.servers) == 0 {
		r.servers = []string{"127.0.0.1:53", "[::1]:53"}
	}
	if r.timeout <= 0 && cc.Timeout > 0 {
		r.timeout = time.Duration(cc.Timeout) * time.Second
	}
	if r.attempts <= 0 && cc.Attempts > 0 {
		r.attempts = cc.Attempts
	}
	return nil
}

// serverAddr checks dns_resolver's "host:port" (IPv6 in brackets) or
// bare host and returns it with a port.
func serverAddr(s string) (string, error) {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		host, port = strings.Trim(s, "[]"), "53"
	}
	if n, err := strconv.Atoi(port); err != nil || n <= 0 || n > 65535 || host == "" {
		return "", fmt.Errorf("dnsr: bad server address %q (want host:port)", s)
	}
	return net.JoinHostPort(host, port), nil
}

// Servers lists the servers asked, in order (for logs).
func (r *Resolver) Servers() []string { return append([]string(nil), r.servers...) }

// answer is the outcome of one question: the records of the asked type
// (CNAMEs followed by the server) or an error kind.
type answer struct {
	rrs  []dns.RR
	kind Kind // 0 = records found
	err  error
	ttl  time.Duration
	// ad: the server set the AD bit (RFC 4035 sec 3.2.3): a validating
	// resolver vouches that the answer is DNSSEC-secure.
	ad bool
}

// query answers a question from the cache, or asks it (once, however
// many callers want it at the same time).
func (r *Resolver) query(ctx context.Context, name string, qtype uint16) answer {
	key := strings.ToLower(name) + "/" + strconv.Itoa(int(qtype))
	if a, ok := r.cache.get(key); ok {
		return a
	}
	r.mu.Lock()
	if c, ok := r.inflight[key]; ok {
		r.mu.Unlock()
		select {
		case <-c.done:
			return c.ans
		case <-ctx.Done():
			return answer{kind: Temporary, err: ctx.Err()}
		}
	}
	c := &call{done: make(chan struct{})}
	r.inflight[key] = c
	r.mu.Unlock()
	c.ans = r.ask(ctx, name, qtype)
	if c.ans.kind != Temporary {
		r.cache.put(key, c.ans)
	}
	r.mu.Lock()
	delete(r.inflight, key)
	r.mu.Unlock()
	close(c.done)
	return c.ans
}

// ask sends the question to each server in turn, for r.attempts rounds,
// until one gives an authoritative outcome (records, NXDOMAIN, no data).
func (r *Resolver) ask(ctx context.Context, name string, qtype uint16) answer {
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	// AD in the question asks a validating resolver to say whether the
	// answer is secure (RFC 6840 sec 5.7); TLSA questions set DO too, as
	// DANE clients do (RFC 7672 sec 2.1.1), so that a resolver that gives
	// AD only with DO still does.
	m.AuthenticatedData = true
	m.SetEdns0(1232, qtype == dns.TypeTLSA)
	var last error = errors.New("no name server")
	for range r.attempts {
		for _, s := range r.servers {
			if err := ctx.Err(); err != nil {
				return answer{kind: Temporary, err: err}
			}
			resp, err := r.exchange(ctx, m, s)
			if err != nil {
				last = err
				continue
			}
			if a, ok := interpret(resp, qtype); ok {
				return a
			}
			last = fmt.Errorf("server %s: %s", s, dns.RcodeToString[resp.Rcode])
		}
	}
	return answer{kind: Temporary, err: last}
}

// exchange asks one server over UDP, again over TCP if the answer was
// truncated (RFC 7766 sec 5).
func (r *Resolver) exchange(ctx context.Context, m *dns.Msg, server string) (*dns.Msg, error) {
	c := &dns.Client{Net: "udp", Timeout: r.timeout, UDPSize: 1232}
	resp, _, err := c.ExchangeContext(ctx, m, server)
	if err == nil && resp.Truncated {
		c.Net = "tcp"
		resp, _, err = c.ExchangeContext(ctx, m, server)
	}
	return resp, err
}

// interpret turns a reply into an answer; ok is false for a reply that
// decides nothing (SERVFAIL, REFUSED, ...), so the next server is asked.
func interpret(resp *dns.Msg, qtype uint16) (answer, bool) {
	switch resp.Rcode {
	case dns.RcodeNameError:
		return answer{kind: NXDomain, ttl: negativeTTL(resp), ad: resp.AuthenticatedData}, true
	case dns.RcodeSuccess:
	default:
		return answer{}, false
	}
	a := answer{ad: resp.AuthenticatedData}
	first := true
	for _, rr := range resp.Answer {
		h := rr.Header()
		if h.Rrtype != qtype && h.Rrtype != dns.TypeCNAME {
			continue
		}
		if ttl := time.Duration(h.Ttl) * time.Second; first || ttl < a.ttl {
			a.ttl, first = ttl, false
		}
		if h.Rrtype == qtype {
			a.rrs = append(a.rrs, rr)
		}
	}
	if len(a.rrs) == 0 {
		return answer{kind: NoData, ttl: negativeTTL(resp), ad: resp.AuthenticatedData}, true
	}
	return a, true
}

// negativeTTL is how long a negative answer may be cached: the SOA
// record's TTL or its minimum field, whichever is less (RFC 2308 sec 5);
// 0 (not cached) without an SOA.
func negativeTTL(resp *dns.Msg) time.Duration {
	for _, rr := range resp.Ns {
		if soa, ok := rr.(*dns.SOA); ok {
			return time.Duration(min(soa.Hdr.Ttl, soa.Minttl)) * time.Second
		}
	}
	return 0
}
