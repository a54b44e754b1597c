package dnsr

import (
	"context"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/holdfast-mta/holdfast/internal/testutil"
)

var zone = []string{
	"mx.test. 300 IN MX 20 b.mx.test.",
	"mx.test. 300 IN MX 10 a.mx.test.",
	"a.mx.test. 300 IN A 192.0.2.1",
	"a.mx.test. 300 IN AAAA 2001:db8::1",
	"only6.test. 300 IN AAAA 2001:db8::2",
	"txt.test. 300 IN TXT \"hello\" \" world\"",
	"1.2.0.192.in-addr.arpa. 300 IN PTR host.test.",
	"alias.test. 300 IN CNAME a.mx.test.",
	"short.test. 2 IN A 192.0.2.9",
}

// clock is a settable time source for the cache.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func newTest(t *testing.T) (*Resolver, *testutil.DNS, *clock) {
	t.Helper()
	ds := testutil.NewDNS(t, zone...)
	clk := &clock{t: time.Unix(1e9, 0)}
	r, err := New(Options{Server: ds.Addr, Timeout: 2 * time.Second, Now: clk.now})
	if err != nil {
		t.Fatal(err)
	}
	return r, ds, clk
}

func TestLookups(t *testing.T) {
	r, _, _ := newTest(t)
	ctx := context.Background()
	mxs, err := r.LookupMX(ctx, "MX.test.")
	if err != nil || len(mxs) != 2 || mxs[0].Host != "a.mx.test" || mxs[1].Pref != 20 {
		t.Fatalf("MX: %v %v", mxs, err)
	}
	ips, err := r.LookupIP(ctx, "a.mx.test")
	want := []netip.Addr{netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("2001:db8::1")}
	if err != nil || !slices.Equal(ips, want) {
		t.Fatalf("IP: %v %v", ips, err)
	}
	if ips, err := r.LookupIP(ctx, "only6.test"); err != nil || len(ips) != 1 {
		t.Fatalf("IPv6 only: %v %v", ips, err)
	}
	if ips, err := r.LookupA(ctx, "alias.test"); err != nil || len(ips) != 1 || ips[0] != want[0] {
		t.Fatalf("A through CNAME: %v %v", ips, err)
	}
	if txt, err := r.LookupTXT(ctx, "txt.test"); err != nil || len(txt) != 1 || txt[0] != "hello world" {
		t.Fatalf("TXT: %q %v", txt, err)
	}
	if names, err := r.LookupPTR(ctx, netip.MustParseAddr("192.0.2.1")); err != nil || len(names) != 1 || names[0] != "host.test" {
		t.Fatalf("PTR: %v %v", names, err)
	}
}

func TestFailures(t *testing.T) {
	r, ds, _ := newTest(t)
	ds.Fail("broken.test.")
	ctx := context.Background()
	cases := []struct {
		name, typ        string
		nx, nodata, temp bool
	}{
		{"nowhere.test", "A", true, false, false},
		{"txt.test", "A", false, true, false},
		{"only6.test", "A", false, true, false},
		{"broken.test", "A", false, false, true},
		{"bad..name", "A", true, false, false},
	}
	for _, c := range cases {
		_, err := r.LookupA(ctx, c.name)
		if err == nil || IsNXDomain(err) != c.nx || (IsNotFound(err) && !IsNXDomain(err)) != c.nodata || IsTemporary(err) != c.temp {
			t.Errorf("%s %s: %v (nx %v notfound %v temp %v)", c.name, c.typ, err, IsNXDomain(err), IsNotFound(err), IsTemporary(err))
		}
	}
	if _, err := r.LookupMX(ctx, "broken.test"); !IsTemporary(err) {
		t.Errorf("MX of a SERVFAIL name: %v", err)
	}
}

// A server that does not answer is a temporary failure, never "not found".
func TestDeadServer(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0") // bound, never answers
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	r, err := New(Options{Server: pc.LocalAddr().String(), Timeout: 100 * time.Millisecond, Attempts: 1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.LookupA(context.Background(), "x.test"); !IsTemporary(err) {
		t.Fatalf("got %v, want a temporary failure", err)
	}
}

// Answers (positive and negative) are kept for their TTL, not longer;
// temporary failures are not kept.
func TestCacheTTL(t *testing.T) {
	r, ds, clk := newTest(t)
	ctx := context.Background()
	for range 3 {
		r.LookupA(ctx, "short.test")
		r.LookupA(ctx, "nowhere.test")
	}
	if n := ds.Asked("short.test. A"); n != 1 {
		t.Fatalf("short.test asked %d times within its TTL, want 1", n)
	}
	if n := ds.Asked("nowhere.test. A"); n != 1 {
		t.Fatalf("NXDOMAIN asked %d times within the SOA minimum, want 1", n)
	}
	clk.add(3 * time.Second)
	r.LookupA(ctx, "short.test")
	if n := ds.Asked("short.test. A"); n != 2 {
		t.Fatalf("short.test asked %d times after its TTL, want 2", n)
	}
	clk.add(61 * time.Second)
	r.LookupA(ctx, "nowhere.test")
	if n := ds.Asked("nowhere.test. A"); n != 2 {
		t.Fatalf("NXDOMAIN asked %d times after 61s, want 2", n)
	}
	ds.Fail("broken.test.")
	r.LookupA(ctx, "broken.test")
	r.LookupA(ctx, "broken.test")
	if n := ds.Asked("broken.test. A"); n < 2 {
		t.Fatalf("a SERVFAIL was cached (%d questions)", n)
	}
}

// A truncated UDP answer is asked again over TCP.
func TestTruncatedRetriesTCP(t *testing.T) {
	r, ds, _ := newTest(t)
	ds.Truncate("txt.test.")
	txt, err := r.LookupTXT(context.Background(), "txt.test")
	if err != nil || len(txt) != 1 || ds.TCP() != 1 {
		t.Fatalf("TXT %q %v, TCP questions %d", txt, err, ds.TCP())
	}
}

// Without dns_resolver the servers of resolv.conf are asked.
func TestResolvConf(t *testing.T) {
	ds := testutil.NewDNS(t, zone...)
	host, port, _ := net.SplitHostPort(ds.Addr)
	f := filepath.Join(t.TempDir(), "resolv.conf")
	if err := os.WriteFile(f, []byte("nameserver "+host+"\noptions timeout:1 attempts:1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// resolv.conf has no port: point it at ours through the file's port.
	r, err := New(Options{ConfFile: f})
	if err != nil {
		t.Fatal(err)
	}
	if got := r.Servers(); len(got) != 1 || got[0] != host+":53" || r.timeout != time.Second || r.attempts != 1 {
		t.Fatalf("servers %v timeout %v attempts %d", got, r.timeout, r.attempts)
	}
	r.servers = []string{net.JoinHostPort(host, port)}
	if ips, err := r.LookupA(context.Background(), "a.mx.test"); err != nil || len(ips) != 1 {
		t.Fatalf("A: %v %v", ips, err)
	}
}

func TestServerAddr(t *testing.T) {
	for in, want := range map[string]string{"127.0.0.1:5353": "127.0.0.1:5353", "127.0.0.1": "127.0.0.1:53", "[::1]:53": "[::1]:53", "::1": "[::1]:53"} {
		if got, err := serverAddr(in); err != nil || got != want {
			t.Errorf("%q: %q %v", in, got, err)
		}
	}
	for _, bad := range []string{"", "host:0", "host:x", ":53"} {
		if _, err := serverAddr(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// With the system's servers a loopback address is named by /etc/hosts or
// not at all, never asked of the network (RFC 6761 sec 6.3).
func TestLoopbackNotAsked(t *testing.T) {
	ds := testutil.NewDNS(t, "2.0.0.127.in-addr.arpa. 60 IN PTR leaked.test.")
	host, port, _ := net.SplitHostPort(ds.Addr)
	dir := t.TempDir()
	conf, hosts := filepath.Join(dir, "resolv.conf"), filepath.Join(dir, "hosts")
	os.WriteFile(conf, []byte("nameserver "+host+"\n"), 0o644)
	os.WriteFile(hosts, []byte("127.0.0.1 localhost\n"), 0o644)
	r, err := New(Options{ConfFile: conf, HostsFile: hosts})
	if err != nil {
		t.Fatal(err)
	}
	r.servers = []string{net.JoinHostPort(host, port)}
	ctx := context.Background()
	if n, err := r.AddrName(ctx, netip.MustParseAddr("127.0.0.1")); err != nil || n != "localhost" {
		t.Errorf("127.0.0.1: %q %v", n, err)
	}
	if n, err := r.AddrName(ctx, netip.MustParseAddr("127.0.0.2")); !IsNXDomain(err) || ds.Asked("2.0.0.127.in-addr.arpa. PTR") != 0 {
		t.Errorf("127.0.0.2: %q %v, asked %d times", n, err, ds.Asked("2.0.0.127.in-addr.arpa. PTR"))
	}
	// With dns_resolver the server is asked (tests and local resolvers).
	r2, _ := New(Options{Server: ds.Addr, HostsFile: hosts})
	if n, err := r2.AddrName(ctx, netip.MustParseAddr("127.0.0.2")); err != nil || n != "leaked.test" {
		t.Errorf("127.0.0.2 with dns_resolver: %q %v", n, err)
	}
}

// TLSA and MX answers report the resolver's AD bit: set for names the
// validating resolver vouches for, not for the others (RFC 7672 sec
// 2.1.1); a secure denial is IsNotFound with secure true.
func TestDNSSECAD(t *testing.T) {
	r, ds, _ := newTest(t)
	ctx := context.Background()
	ds.Add(t, "_25._tcp.a.mx.test. 300 IN TLSA 3 1 1 "+strings.Repeat("ab", 32),
		"_25._tcp.b.mx.test. 300 IN TLSA 3 1 1 "+strings.Repeat("cd", 32))
	ds.Secure("_25._tcp.a.mx.test.", "mx.test.", "_25._tcp.none.test.")
	recs, secure, err := r.LookupTLSA(ctx, "_25._tcp.a.mx.test")
	if err != nil || !secure || len(recs) != 1 || recs[0].Usage != 3 {
		t.Fatalf("secure TLSA: %v %v %v", recs, secure, err)
	}
	if recs, secure, err := r.LookupTLSA(ctx, "_25._tcp.b.mx.test"); err != nil || secure || len(recs) != 1 {
		t.Fatalf("insecure TLSA: %v %v %v", recs, secure, err)
	}
	if _, secure, err := r.LookupTLSA(ctx, "_25._tcp.none.test"); !IsNotFound(err) || !secure {
		t.Fatalf("secure denial: %v %v", secure, err)
	}
	if _, secure, err := r.LookupMXSecure(ctx, "mx.test"); err != nil || !secure {
		t.Fatalf("secure MX: %v %v", secure, err)
	}
}
