package delivery

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/holdfast-mta/holdfast/config"
	"github.com/holdfast-mta/holdfast/internal/testutil"
	"github.com/holdfast-mta/holdfast/store"
)

// A zero in the configuration means what Postfix says, not "the
// default": no destination concurrency or recipient limit of its own, no
// address limit, one attempt; and the load-time clips of Postfix's qmgr.
func TestZeroMeansZero(t *testing.T) {
	o, err := OptionsFromConfig(testutil.Config(t, "default_destination_concurrency_limit", "0",
		"default_destination_recipient_limit", "0", "smtp_mx_address_limit", "0",
		"maximal_queue_lifetime", "0", "minimal_backoff_time", "1h", "maximal_backoff_time", "10m"))
	if err != nil {
		t.Fatal(err)
	}
	if got := o.destLimit("smtp"); got != o.Concurrency {
		t.Errorf("destination limit %d, want delivery_concurrency_limit %d", got, o.Concurrency)
	}
	if got := o.rcptLimit("smtp"); got < 1<<30 {
		t.Errorf("recipient limit %d, want none", got)
	}
	if o.MXAddressLimit != 0 || o.MaxQueueLifetime != 0 || o.BounceQueueLifetime != 0 {
		t.Errorf("mx limit %d, lifetimes %v %v", o.MXAddressLimit, o.MaxQueueLifetime, o.BounceQueueLifetime)
	}
	if o.MaxBackoff != time.Hour {
		t.Errorf("maximal_backoff_time %v below minimal_backoff_time, want raised to 1h", o.MaxBackoff)
	}
	d := DefaultOptions()
	if d.DefaultDestinationLimit != 20 || d.DefaultRecipientLimit != 50 || d.MXAddressLimit != 5 || d.ShutdownGrace != 30*time.Second {
		t.Errorf("DefaultOptions: %d %d %d %v, want the table's 20 50 5 30s", d.DefaultDestinationLimit, d.DefaultRecipientLimit, d.MXAddressLimit, d.ShutdownGrace)
	}
}

func TestBackoff(t *testing.T) {
	o := DefaultOptions()
	want := []time.Duration{300, 600, 1200, 2400, 4000, 4000, 4000}
	for i, w := range want {
		if got := o.backoff(i + 1); got != w*time.Second {
			t.Errorf("backoff(%d) = %v, want %v", i+1, got, w*time.Second)
		}
	}
	if got := o.backoff(1000); got != 4000*time.Second {
		t.Errorf("backoff(1000) = %v", got)
	}
}

func TestSplitTransport(t *testing.T) {
	tests := []struct{ in, transport, nexthop string }{
		{"smtp:[mail.example]", "smtp", "[mail.example]"},
		{"etrn-only:[mailhost]:2525", "etrn-only", "[mailhost]:2525"},
		{"relay:", "relay", ""},
		{":[10.0.0.1]", "", "[10.0.0.1]"},
		{"[mail.example]", "", "[mail.example]"},
		{"[mail.example]:587", "", "[mail.example]:587"},
		{"mail.example:2525", "", "mail.example:2525"},
		{"error:5.1.1 user unknown", "error", "5.1.1 user unknown"},
		{"discard:", "discard", ""},
		{"smtp", "smtp", ""},
	}
	for _, tt := range tests {
		tr, nh := splitTransport(tt.in)
		if tr != tt.transport || nh != tt.nexthop {
			t.Errorf("splitTransport(%q) = %q, %q; want %q, %q", tt.in, tr, nh, tt.transport, tt.nexthop)
		}
	}
}

func TestParseNexthop(t *testing.T) {
	tests := []struct {
		in   string
		want hop
		err  bool
	}{
		{"example.com", hop{Host: "example.com", MX: true}, false},
		{"Example.COM.", hop{Host: "example.com", MX: true}, false},
		{"example.com:2525", hop{Host: "example.com", Port: 2525, MX: true}, false},
		{"[mail.example.com]", hop{Host: "mail.example.com"}, false},
		{"[mail.example.com]:587", hop{Host: "mail.example.com", Port: 587}, false},
		{"[192.0.2.1]", hop{Host: "192.0.2.1"}, false},
		{"[ipv6:2001:db8::1]:25", hop{Host: "2001:db8::1", Port: 25}, false},
		{"192.0.2.7", hop{Host: "192.0.2.7"}, false},
		{"[mx.Café.test]:2525", hop{Host: "mx.xn--caf-dma.test", Port: 2525}, false},
		{"café.test", hop{Host: "xn--caf-dma.test", MX: true}, false},
		{"[broken", hop{}, true},
		{"[x]:http", hop{}, true},
		{"[x]:99999", hop{}, true},
	}
	for _, tt := range tests {
		got, err := parseNexthop(tt.in, KindSMTP)
		if (err != nil) != tt.err || (!tt.err && got != tt.want) {
			t.Errorf("parseNexthop(%q) = %+v, %v; want %+v, err %v", tt.in, got, err, tt.want, tt.err)
		}
	}
}

func TestResolve(t *testing.T) {
	o := testOptions(t)
	o.Transports = mapTable{
		"etrn.test":     "etrn-only:[mailhost.etrn.test]",
		"gone.test":     "error:mail for gone.test is not accepted",
		"user@any.test": ":[special.test]",
		"later.test":    "retry:4.7.1 try again tomorrow",
		"store.test":    "lmtp:[192.0.2.7]:2424",
		"sock.test":     "lmtp:unix:/run/lmtp.sock",
		"inet.test":     "lmtp:inet:mda.test",
		"mbox.test":     "local:",
		"pipe.test":     "uucp:gateway",
	}
	o.Relayhost, o.DeferTransports = "[smarthost.test]:587", []string{"etrn-only"}
	d := &Scheduler{o: o}
	tests := []struct {
		addr string
		kind routeKind
		key  string
	}{
		{"a@etrn.test", routeSMTP, "etrn-only:[mailhost.etrn.test]"},
		{"a@gone.test", routeError, ""},
		{"user@any.test", routeSMTP, "smtp:[special.test]"},
		{"other@any.test", routeSMTP, "smtp:[smarthost.test]:587"},
		{"a@later.test", routeRetry, ""},
		{"a@store.test", routeSMTP, "lmtp:[192.0.2.7]:2424"},
		{"a@sock.test", routeSMTP, "lmtp:unix:/run/lmtp.sock"},
		{"a@inet.test", routeSMTP, "lmtp:[mda.test]"},
		{"a@mbox.test", routeUnavailable, ""},
		{"a@pipe.test", routeUnavailable, ""},
	}
	for _, tt := range tests {
		r, err := d.resolve(tt.addr)
		if err != nil || r.Kind != tt.kind || (tt.key != "" && r.Hop.Key() != tt.key) {
			t.Errorf("resolve(%q) = %+v (%s), %v", tt.addr, r, r.Hop.Key(), err)
		}
	}
	d.o.Relayhost = ""
	if r, _ := d.resolve("x@Example.test"); r.Hop.Key() != "smtp:example.test" || !r.Hop.MX {
		t.Errorf("domain route %+v", r)
	}
}

func TestClassify(t *testing.T) {
	tg := target{Name: "mx.test", Addr: netip.MustParseAddr("192.0.2.1"), Port: 25}
	timeout := &net.OpError{Op: "read", Err: &timeoutErr{}}
	tests := []struct {
		err    error
		state  store.RcptState
		dsn    string
		status string
	}{
		{&smtp.SMTPError{Code: 250, EnhancedCode: smtp.EnhancedCode{2, 0, 0}, Message: "ok"}, store.RcptDelivered, "2.0.0", "sent"},
		{&smtp.SMTPError{Code: 450, EnhancedCode: smtp.EnhancedCode{4, 2, 0}, Message: "busy"}, store.RcptPending, "4.2.0", "deferred"},
		{&smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "unknown"}, store.RcptBounced, "5.1.1", "bounced"},
		{&smtp.SMTPError{Code: 554, EnhancedCode: smtp.NoEnhancedCode, Message: "no"}, store.RcptBounced, "5.0.0", "bounced"},
		{&smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "odd"}, store.RcptPending, "4.7.1", "deferred"},
		{timeout, store.RcptPending, "4.4.2", "deferred"},
		{errors.New("EOF"), store.RcptPending, "4.4.2", "deferred"},
	}
	for _, tt := range tests {
		r := classify(tt.err, tg, "RCPT TO", false)
		if r.State != tt.state || r.DSN != tt.dsn || r.Status != tt.status {
			t.Errorf("classify(%v) = %+v", tt.err, r)
		}
	}
	if r := classify(&smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "x"}, tg, "RCPT TO", true); r.State != store.RcptPending || r.DSN != "4.1.1" {
		t.Errorf("soft_bounce: %+v", r)
	}
	r := classify(&smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user"}, tg, "RCPT TO", false)
	if r.Reply != "host mx.test[192.0.2.1] said: 550 5.1.1 no such user (in reply to RCPT TO command)" || r.Diag != "smtp; 550 5.1.1 no such user" {
		t.Errorf("wording: %+v", r)
	}
	if r := classify(timeout, tg, "sending message body", false); r.Reply != "conversation with mx.test[192.0.2.1] timed out while sending message body" {
		t.Errorf("timeout wording: %q", r.Reply)
	}
}

type timeoutErr struct{}

func (timeoutErr) Error() string   { return "i/o timeout" }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }

func TestOptionsFromConfig(t *testing.T) {
	c := config.Default()
	c.Set("myhostname", "relay.example")
	c.Set("defer_transports", "etrn-only, slow")
	c.Set("transport_maps", "inline:{customer.tld=etrn-only:[mailhost.customer.tld]}")
	c.Set("minimal_backoff_time", "10m")
	c.Set("maximal_backoff_time", "2h")
	c.Set("maximal_queue_lifetime", "0")
	c.Set("smtp_host_lookup", "native")
	c.Set("smtp_tls_security_level", "may")
	c.Set("smtp_destination_concurrency_limit", "7")
	o, err := OptionsFromConfig(c)
	if err != nil {
		t.Fatal(err)
	}
	if o.Timeouts.Rset != 20*time.Second || o.ConnCacheTime != 2*time.Second {
		t.Errorf("defaults: rset %v, cache %v", o.Timeouts.Rset, o.ConnCacheTime)
	}
	c.Set("smtp_rset_timeout", "7")
	c.Set("smtp_connection_cache_time_limit", "1m")
	if o, err = OptionsFromConfig(c); err != nil || o.Timeouts.Rset != 7*time.Second || o.ConnCacheTime != time.Minute {
		t.Errorf("rset %v, cache %v, %v", o.Timeouts.Rset, o.ConnCacheTime, err)
	}
	if o.Hostname != "relay.example" || o.HeloName != "relay.example" || o.MinBackoff != 10*time.Minute || o.MaxBackoff != 2*time.Hour {
		t.Errorf("%+v", o)
	}
	if len(o.DeferTransports) != 2 || o.DeferTransports[1] != "slow" || o.DNS || o.TLSLevel != TLSMay {
		t.Errorf("%+v", o)
	}
	if o.DestinationLimit("smtp") != 7 || o.DestinationLimit("etrn-only") != 20 || o.Concurrency != 100 {
		t.Errorf("limits smtp %d etrn-only %d global %d", o.DestinationLimit("smtp"), o.DestinationLimit("etrn-only"), o.Concurrency)
	}
	if o.MaxQueueLifetime != 0 {
		t.Errorf("lifetime 0 must stay 0 (one attempt)")
	}
	v, ok, err := o.Transports.Lookup("someone@customer.tld")
	if err != nil || !ok || v != "etrn-only:[mailhost.customer.tld]" {
		t.Errorf("transport lookup %q %v %v", v, ok, err)
	}
	c.Set("smtp_tls_security_level", "dane")
	if o, err := OptionsFromConfig(c); err != nil || o.TLSLevel != TLSDane || o.TLS.Digest != "sha256" || o.TLS.SecureMatch[1] != "dot-nexthop" ||
		!strings.Contains(strings.Join(o.Warnings, "\n"), "needs DNS lookups with smtp_dns_support_level = dnssec") {
		t.Errorf("dane: %v %q", err, o.Warnings)
	}
	c.Set("smtp_tls_protocols", ">=TLSv1.4")
	if _, err := OptionsFromConfig(c); err == nil {
		t.Error("bad smtp_tls_protocols accepted")
	}
}

// The smtp_tls_* files are read at start-up: CAfile, the client
// certificate and the policy table; a bad file is a start-up error.
func TestTLSFromConfig(t *testing.T) {
	dir := t.TempDir()
	ca, err := testutil.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := ca.Issue(time.Now().Add(time.Hour), "relay.test")
	cf, kf, err := testutil.PEMFiles(dir, cert)
	if err != nil {
		t.Fatal(err)
	}
	caFile, policy := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "tls_policy")
	os.WriteFile(caFile, ca.PEM, 0o600)
	os.WriteFile(policy, []byte("[mail.customer.example]:25 secure match=mail.customer.example\n.customer.example may\n"), 0o600)
	text := fmt.Sprintf("smtp_tls_CAfile = %s\nsmtp_tls_cert_file = %s\nsmtp_tls_key_file = %s\nsmtp_tls_policy_maps = texthash:%s\nsmtp_tls_mandatory_protocols = >=TLSv1.2\n", caFile, cf, kf, policy)
	c, err := config.Parse("main.cf", []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	o, err := OptionsFromConfig(c)
	if err != nil {
		t.Fatal(err)
	}
	if o.TLS.Roots == nil || o.TLS.Cert == nil || o.TLS.MandatoryProtocols != ">=TLSv1.2" {
		t.Fatalf("%+v", o.TLS)
	}
	if v, key, err := lookupPolicy(o.TLS.Policy, "mx.customer.example"); err != nil || key != ".customer.example" || v != "may" {
		t.Errorf("policy %q %q %v", v, key, err)
	}
	c.Set("smtp_tls_cert_file", filepath.Join(dir, "missing.pem"))
	if _, err := OptionsFromConfig(c); err == nil || !strings.Contains(err.Error(), "smtp_tls_cert_file") {
		t.Errorf("missing certificate: %v", err)
	}
}

// Postfix's obsolete smtp_use_tls and smtp_enforce_tls give the level when
// smtp_tls_security_level is empty, never a quiet plaintext.
func TestObsoleteTLSParameters(t *testing.T) {
	for text, want := range map[string]string{
		"smtp_use_tls = yes\n":                                     TLSMay,
		"smtp_enforce_tls = yes\n":                                 TLSVerify,
		"smtp_enforce_tls = yes\nsmtp_tls_enforce_peername = no\n": TLSEncrypt,
		"smtp_enforce_tls = yes\nsmtp_tls_security_level = may\n":  TLSMay,
		"": TLSNone,
	} {
		c, err := config.Parse("main.cf", []byte(text))
		if err != nil {
			t.Fatal(err)
		}
		if o, err := OptionsFromConfig(c); err != nil || o.TLSLevel != want {
			t.Errorf("%q: %q %v", text, o.TLSLevel, err)
		}
	}
}

// writeLog is a net.Conn that records the writes made to it.
type writeLog struct {
	net.Conn
	writes []string
}

func (w *writeLog) Write(p []byte) (int, error) {
	w.writes = append(w.writes, string(p))
	return len(p), nil
}

// TestGreetedSkipsEHLO: the EHLO go-smtp writes after the replayed
// greeting is dropped without an empty write to the connection (one
// syscall per new session), and what follows it goes through.
func TestGreetedSkipsEHLO(t *testing.T) {
	w := &writeLog{}
	g := &greeted{Conn: w, skipLine: true}
	if n, err := g.Write([]byte("EHLO relay.test\r\n")); n != 17 || err != nil {
		t.Fatalf("Write = %d, %v", n, err)
	}
	if len(w.writes) != 0 {
		t.Fatalf("writes %q, want none", w.writes)
	}
	if _, err := g.Write([]byte("MAIL FROM:<>\r\n")); err != nil {
		t.Fatal(err)
	}
	w2 := &writeLog{}
	g2 := &greeted{Conn: w2, skipLine: true}
	g2.Write([]byte("EHLO relay.test\r\nNOOP\r\n"))
	if want := []string{"MAIL FROM:<>\r\n"}; !slices.Equal(w.writes, want) {
		t.Errorf("writes %q, want %q", w.writes, want)
	}
	if want := []string{"NOOP\r\n"}; !slices.Equal(w2.writes, want) {
		t.Errorf("writes %q, want %q", w2.writes, want)
	}
}
