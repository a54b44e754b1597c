package delivery

import (
	"bufio"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/holdfast-mta/holdfast/internal/testutil"
	"github.com/holdfast-mta/holdfast/store"
)

// tlsServer is a customer MTA presenting cert.
func tlsServer(t *testing.T, cert tls.Certificate, tweak func(*tls.Config)) *testutil.MTA {
	t.Helper()
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}}
	if tweak != nil {
		tweak(cfg)
	}
	return testutil.NewMTA(t, testutil.MTAOptions{TLSConfig: cfg})
}

func must[T any](t *testing.T) func(v T, err error) T {
	return func(v T, err error) T {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
}

// fp is the colon-separated SHA-256 digest of a certificate.
func fp(c tls.Certificate) string {
	sum := sha256.Sum256(c.Certificate[0])
	var parts []string
	for _, b := range sum {
		parts = append(parts, strings.ToUpper(hex.EncodeToString([]byte{b})))
	}
	return strings.Join(parts, ":")
}

// Each level with a good certificate delivers; with a bad one it defers
// with Postfix's code and text, logs the reason, and sends nothing in
// plaintext.
func TestTLSLevels(t *testing.T) {
	ca := must[*testutil.CA](t)(testutil.NewCA())
	later := time.Now().Add(24 * time.Hour)
	good := must[tls.Certificate](t)(ca.Issue(later, "mx.customer.test"))
	wrongName := must[tls.Certificate](t)(ca.Issue(later, "other.test"))
	expired := must[tls.Certificate](t)(ca.Issue(time.Now().Add(-time.Hour), "mx.customer.test"))
	selfCfg := must[*tls.Config](t)(testutil.SelfSignedTLS("mx.customer.test"))
	self := selfCfg.Certificates[0]
	tests := []struct {
		name, level string
		cert        tls.Certificate
		fps         []string
		tlsTweak    func(*tls.Config)
		protocols   string
		dsn, log    string // "" = delivered
		plain       bool   // delivered in plaintext (may's fallback)
	}{
		{name: "verify", level: TLSVerify, cert: good},
		{name: "verify self-signed", level: TLSVerify, cert: self, dsn: "4.7.5", log: ": self-signed certificate"},
		{name: "verify name", level: TLSVerify, cert: wrongName, dsn: "4.7.5", log: "hostname mismatch"},
		{name: "verify expired", level: TLSVerify, cert: expired, dsn: "4.7.5", log: "certificate has expired"},
		{name: "secure", level: TLSSecure, cert: good},
		{name: "secure name", level: TLSSecure, cert: wrongName, dsn: "4.7.5", log: "hostname mismatch"},
		{name: "fingerprint", level: TLSFingerprint, cert: self, fps: []string{fp(self)}},
		{name: "fingerprint mismatch", level: TLSFingerprint, cert: self, fps: []string{fp(good)}, dsn: "4.7.5", log: "not trusted by local or TLSA policy"},
		{name: "encrypt self-signed", level: TLSEncrypt, cert: self},
		{name: "encrypt handshake", level: TLSEncrypt, cert: good, protocols: "<=TLSv1.2",
			tlsTweak: func(c *tls.Config) { c.MinVersion = tls.VersionTLS13 }, dsn: "4.7.5"},
		{name: "may handshake", level: TLSMay, cert: good, protocols: "<=TLSv1.2",
			tlsTweak: func(c *tls.Config) { c.MinVersion = tls.VersionTLS13 }, plain: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := tlsServer(t, tc.cert, tc.tlsTweak)
			dns := testutil.NewDNS(t, "mx.customer.test. 60 IN A 127.0.0.1")
			e := newEnv(t, func(e *env) {
				e.o.TLSLevel, e.o.DNS, e.o.DNSServer = tc.level, true, dns.Addr
				s := DefaultTLS()
				s.Roots, s.Fingerprints = ca.Pool, tc.fps
				if tc.protocols != "" {
					s.Protocols, s.MandatoryProtocols = tc.protocols, tc.protocols
				}
				e.o.TLS = s
				e.tm["customer.test"] = fmt.Sprintf("smtp:[mx.customer.test]:%d", srv.Port)
			})
			id := e.enqueue("alice@origin.test", "bob@customer.test")
			if tc.dsn == "" {
				got := srv.Wait(1, 5*time.Second)
				if len(got) != 1 || got[0].TLS == tc.plain {
					t.Fatalf("got %+v", got)
				}
				e.waitGone(id)
				return
			}
			r := e.waitAttempts(id, 1).Recipients[0]
			if r.DSN != tc.dsn || (tc.log != "" && r.Reply != "Server certificate not verified") {
				t.Fatalf("%s %q", r.DSN, r.Reply)
			}
			if !strings.Contains(e.logs.String(), tc.log) {
				t.Fatalf("log lacks %q:\n%s", tc.log, e.logs.String())
			}
			if len(srv.Messages()) != 0 {
				t.Fatal("sent anyway")
			}
		})
	}
}

// One EHLO per plaintext session at level may (none offered STARTTLS),
// two with STARTTLS (RFC 3207 sec 4.2); the log records TLS or its
// absence on the delivery line, and Postfix's "TLS connection
// established" line.
func TestTLSOneEHLOAndLog(t *testing.T) {
	ev := &tlsEvents{}
	e := newEnv(t, func(e *env) { e.o.TLSLevel, e.o.Events = TLSMay, ev })
	secure := testutil.NewMTA(t, testutil.MTAOptions{TLS: true})
	e.tm["secure.test"] = fmt.Sprintf("smtp:[127.0.0.1]:%d", secure.Port)
	e.waitGone(e.enqueue("alice@origin.test", "bob@customer.test"))
	if n := e.mta.Hellos(); n != 1 {
		t.Errorf("%d EHLOs on a plaintext session", n)
	}
	e.waitGone(e.enqueue("alice@origin.test", "bob@secure.test"))
	if n := secure.Hellos(); n != 2 {
		t.Errorf("%d EHLOs on a TLS session", n)
	}
	if got := ev.get(); got != "none/sent untrusted/sent" {
		t.Errorf("TLS outcomes %q", got)
	}
	logs := e.logs.String()
	for _, want := range []string{`"tls":"none"`, `"tls":"TLSv1.3"`, `"tls_trust":"Untrusted"`,
		`Untrusted TLS connection established to 127.0.0.1[127.0.0.1]:` + fmt.Sprint(secure.Port) + `: TLSv1.3 with cipher TLS_`} {
		if !strings.Contains(logs, want) {
			t.Errorf("log lacks %s:\n%s", want, logs)
		}
	}
}

// smtp_tls_policy_maps: three destinations at three levels, and the
// lookup order (next hop, then parent domains; an explicit next hop only
// as given).
func TestTLSPolicyMaps(t *testing.T) {
	tab := mapTable{".example.com": "may", "example.com": "secure", "[mx.example.com]:25": "encrypt"}
	for dest, want := range map[string]string{"example.com": "example.com", "a.b.example.com": ".example.com",
		"[mx.example.com]:25": "[mx.example.com]:25", "[a.example.com]": "", "example.org": ""} {
		if _, key, _ := lookupPolicy(tab, dest); key != want {
			t.Errorf("%s: key %q, want %q", dest, key, want)
		}
	}

	ca := must[*testutil.CA](t)(testutil.NewCA())
	clientCert := must[tls.Certificate](t)(ca.Issue(time.Now().Add(time.Hour), "relay.test"))
	certFile, keyFile, err := testutil.PEMFiles(t.TempDir(), clientCert)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	good := must[tls.Certificate](t)(ca.Issue(time.Now().Add(time.Hour), "mx.one.test"))
	one := tlsServer(t, good, func(c *tls.Config) { c.ClientAuth = tls.RequestClientCert })
	two := testutil.NewMTA(t, testutil.MTAOptions{TLS: true}) // self-signed
	three := testutil.NewMTA(t, testutil.MTAOptions{TLS: true})
	dns := testutil.NewDNS(t, "mx.one.test. 60 IN A 127.0.0.1")
	e := newEnv(t, func(e *env) {
		e.o.TLSLevel, e.o.DNS, e.o.DNSServer = TLSNone, true, dns.Addr
		s := DefaultTLS()
		s.Roots, s.Cert = ca.Pool, &cert
		s.Policy = mapTable{
			fmt.Sprintf("[mx.one.test]:%d", one.Port): "secure match=mx.one.test",
			fmt.Sprintf("[127.0.0.1]:%d", two.Port):   "encrypt protocols=>=TLSv1.2",
			fmt.Sprintf("[127.0.0.1]:%d", three.Port): "verify",
		}
		e.o.TLS = s
		e.tm["one.test"] = fmt.Sprintf("smtp:[mx.one.test]:%d", one.Port)
		e.tm["two.test"] = fmt.Sprintf("smtp:[127.0.0.1]:%d", two.Port)
		e.tm["three.test"] = fmt.Sprintf("smtp:[127.0.0.1]:%d", three.Port)
	})
	e.enqueue("alice@origin.test", "bob@one.test")
	e.enqueue("alice@origin.test", "bob@two.test")
	id := e.enqueue("alice@origin.test", "bob@three.test")
	if got := one.Wait(1, 5*time.Second); len(got) != 1 || !got[0].TLS || got[0].ClientCert != "relay.test" {
		t.Fatalf("one (secure, client certificate): %+v", got)
	}
	if got := two.Wait(1, 5*time.Second); len(got) != 1 || !got[0].TLS {
		t.Fatalf("two (encrypt): %+v", got)
	}
	if r := e.waitAttempts(id, 1).Recipients[0]; r.DSN != "4.7.5" || len(three.Messages()) != 0 {
		t.Fatalf("three (verify, self-signed): %s %s", r.DSN, r.Reply)
	}
	if !strings.Contains(e.logs.String(), `"tls_trust":"Verified"`) {
		t.Error("no Verified session logged")
	}
}

// DANE (RFC 7672) against a loopback DNS server in the role of the
// validating resolver: TLSA records with the AD bit are used (DANE-EE,
// DANE-TA), the same records without it are not trusted.
func TestDANE(t *testing.T) {
	ca := must[*testutil.CA](t)(testutil.NewCA())
	var names []string
	for i := 1; i <= 7; i++ {
		names = append(names, fmt.Sprintf("mx.d%d.test", i))
	}
	cert := must[tls.Certificate](t)(ca.Issue(time.Now().Add(time.Hour), names...))
	srv := tlsServer(t, cert, nil)
	spki := sha256.Sum256(cert.Leaf.RawSubjectPublicKeyInfo)
	caSum := sha256.Sum256(ca.Cert.Raw)
	ee := "3 1 1 " + hex.EncodeToString(spki[:])
	ta := "2 0 1 " + hex.EncodeToString(caSum[:])
	wrong := "3 1 1 " + strings.Repeat("ab", 32)
	dns := testutil.NewDNS(t)
	tests := []struct {
		level, tlsa   string
		secureTLSA    bool
		secureMX      bool
		bogus         bool   // SERVFAIL, as a validating resolver answers a DNSSEC-bogus name
		dsn, reply    string // "" = delivered
		trust, status string
	}{
		{level: TLSDaneOnly, tlsa: ee, secureTLSA: true, secureMX: true, trust: "Verified"},
		{level: TLSDaneOnly, tlsa: ta, secureTLSA: true, secureMX: true, trust: "Verified"},
		{level: TLSDaneOnly, tlsa: ee, secureMX: true, dsn: "4.7.5", reply: "no TLSA records found"},
		{level: TLSDaneOnly, tlsa: wrong, secureTLSA: true, secureMX: true, dsn: "4.7.5", reply: "Server certificate not verified"},
		{level: TLSDaneOnly, tlsa: ee, secureTLSA: true, dsn: "4.7.5", reply: "non DNSSEC destination"},
		{level: TLSDane, tlsa: ee, secureMX: true, trust: "Trusted"}, // not secure: may
		{level: TLSDane, tlsa: ee, secureTLSA: true, secureMX: true, bogus: true, dsn: "4.7.5", reply: "TLSA lookup error for mx.d7.test:PORT"},
	}
	for i, tc := range tests {
		dom, mx := fmt.Sprintf("d%d.test.", i+1), names[i]+"."
		tlsa := fmt.Sprintf("_%d._tcp.%s", srv.Port, mx)
		dns.Add(t, dom+" 60 IN MX 10 "+mx, mx+" 60 IN A 127.0.0.1", tlsa+" 60 IN TLSA "+tc.tlsa)
		if tc.secureMX {
			dns.Secure(dom)
		}
		if tc.secureTLSA {
			dns.Secure(tlsa)
		}
		if tc.bogus {
			dns.Fail(tlsa)
		}
	}
	for i, tc := range tests {
		t.Run(fmt.Sprintf("%d %s", i+1, tc.level), func(t *testing.T) {
			e := newEnv(t, func(e *env) {
				e.o.TLSLevel, e.o.DNS, e.o.DNSServer, e.o.Port = tc.level, true, dns.Addr, srv.Port
				s := DefaultTLS()
				s.Roots, s.DNSSEC = ca.Pool, true
				e.o.TLS = s
			})
			id := e.enqueue("alice@origin.test", fmt.Sprintf("bob@d%d.test", i+1))
			if tc.dsn == "" {
				e.waitGone(id)
				if !strings.Contains(e.logs.String(), `"tls_trust":"`+tc.trust+`"`) {
					t.Fatalf("not %s:\n%s", tc.trust, e.logs.String())
				}
				return
			}
			r := e.waitAttempts(id, 1).Recipients[0]
			if r.DSN != tc.dsn || r.Reply != strings.ReplaceAll(tc.reply, "PORT", fmt.Sprint(srv.Port)) {
				t.Fatalf("%s %q", r.DSN, r.Reply)
			}
		})
	}
	if n := len(srv.Messages()); n != 3 {
		t.Errorf("%d messages delivered, want 3", n)
	}
}

// tlsEvents records TLSOutcome calls (delivery.TLSEvents).
type tlsEvents struct {
	mu  sync.Mutex
	got []string
}

func (e *tlsEvents) Outcome(store.ID, string, string) {}
func (e *tlsEvents) ObserveDelivery(time.Duration)    {}
func (e *tlsEvents) TLSOutcome(tls, status string) {
	e.mu.Lock()
	e.got = append(e.got, tls+"/"+status)
	e.mu.Unlock()
}
func (e *tlsEvents) get() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return strings.Join(e.got, " ")
}

// A server that sends garbage after "220 Ready to start TLS", or offers
// STARTTLS and then refuses it: at encrypt the mail is deferred (4.7.5,
// or the server's code with Postfix's "TLS is required, but host X
// refused to start TLS"), and no MAIL FROM is ever sent in plaintext.
func TestTLSBadServers(t *testing.T) {
	for _, tc := range []struct{ name, afterStartTLS, dsn, reply string }{
		{"garbage", "220 2.0.0 Ready to start TLS\r\n\x16\x03\x01garbage\r\n", "4.7.5", "Cannot start TLS: handshake failure"},
		{"refused", "454 4.7.0 TLS not available due to local problem\r\n", "4.7.0", "TLS is required, but host 127.0.0.1[127.0.0.1] refused to start TLS: 4.7.0 TLS not available due to local problem"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { ln.Close() })
			var plainMail atomic.Bool
			go func() {
				for {
					c, err := ln.Accept()
					if err != nil {
						return
					}
					go func() {
						defer c.Close()
						r := bufio.NewReader(c)
						c.Write([]byte("220 bad.test ESMTP\r\n"))
						for {
							l, err := r.ReadString('\n')
							if err != nil {
								return
							}
							switch cmd := strings.ToUpper(strings.TrimSpace(l)); {
							case strings.HasPrefix(cmd, "EHLO"):
								c.Write([]byte("250-bad.test\r\n250 STARTTLS\r\n"))
							case cmd == "STARTTLS":
								c.Write([]byte(tc.afterStartTLS))
							case strings.HasPrefix(cmd, "MAIL"):
								plainMail.Store(true)
								c.Write([]byte("250 ok\r\n"))
							default:
								c.Write([]byte("221 bye\r\n"))
								return
							}
						}
					}()
				}
			}()
			e := newEnv(t, func(e *env) {
				e.o.TLSLevel = TLSEncrypt
				e.tm["bad.test"] = "smtp:[127.0.0.1]:" + fmt.Sprint(ln.Addr().(*net.TCPAddr).Port)
			})
			id := e.enqueue("alice@origin.test", "bob@bad.test")
			r := e.waitAttempts(id, 1).Recipients[0]
			if r.DSN != tc.dsn || !strings.HasPrefix(r.Reply, tc.reply) || plainMail.Load() {
				t.Fatalf("%s %q plaintext MAIL %v", r.DSN, r.Reply, plainMail.Load())
			}
		})
	}
}
