package delivery

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/holdfast-mta/holdfast/internal/testutil"
	"github.com/holdfast-mta/holdfast/store"
)

// lmtpServer is go-smtp's server in LMTP mode (RFC 2033) as the final
// store: the local part of each recipient says what it answers after the
// content ("full" 452, "gone" 550, anything else 250).
type lmtpServer struct {
	mu   sync.Mutex
	got  map[string]string // recipient -> content, for those accepted
	lhlo []string
}

func newLMTPServer(t *testing.T, network, addr string) (*lmtpServer, net.Listener) {
	t.Helper()
	l, err := net.Listen(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	ls := &lmtpServer{got: map[string]string{}}
	s := smtp.NewServer(ls)
	s.LMTP = true
	s.Domain = "mda.test"
	s.ReadTimeout, s.WriteTimeout = 10*time.Second, 10*time.Second
	go s.Serve(l)
	t.Cleanup(func() { s.Close() })
	return ls, l
}

func (s *lmtpServer) NewSession(c *smtp.Conn) (smtp.Session, error) {
	s.mu.Lock()
	s.lhlo = append(s.lhlo, c.Hostname())
	s.mu.Unlock()
	return &lmtpSession{s: s}, nil
}

func (s *lmtpServer) received() map[string]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]string{}
	for k, v := range s.got {
		out[k] = v
	}
	return out
}

type lmtpSession struct {
	s     *lmtpServer
	rcpts []string
}

func (x *lmtpSession) Mail(string, *smtp.MailOptions) error { return nil }
func (x *lmtpSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	x.rcpts = append(x.rcpts, to)
	return nil
}
func (x *lmtpSession) Data(io.Reader) error { return errors.New("LMTPData expected") }
func (x *lmtpSession) Reset()               { x.rcpts = nil }
func (x *lmtpSession) Logout() error        { return nil }

func (x *lmtpSession) LMTPData(r io.Reader, status smtp.StatusCollector) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	for _, to := range x.rcpts {
		switch strings.SplitN(to, "@", 2)[0] {
		case "full":
			status.SetStatus(to, &smtp.SMTPError{Code: 452, EnhancedCode: smtp.EnhancedCode{4, 2, 2}, Message: "Mailbox full"})
		case "gone":
			status.SetStatus(to, &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "No such user"})
		default:
			x.s.mu.Lock()
			x.s.got[to] = string(b)
			x.s.mu.Unlock()
			status.SetStatus(to, nil)
		}
	}
	return nil
}

// checkLMTPOutcomes delivers one message with three recipients over LMTP
// and checks one outcome per recipient in the queue: delivered, deferred
// with the server's 452, bounced with its 550.
func checkLMTPOutcomes(t *testing.T, e *env, ls *lmtpServer, relay string) {
	t.Helper()
	id := e.enqueue("alice@origin.test", "ok@store.test", "full@store.test", "gone@store.test")
	m := e.waitMsg(id, "lmtp attempt", func(m *store.Message) bool { return m != nil && m.Recipients[1].Attempts >= 1 })
	want := []store.RcptState{store.RcptDelivered, store.RcptPending, store.RcptBounced}
	for i, st := range want {
		if m.Recipients[i].State != st {
			t.Errorf("%s: state %v, want %v (reply %q)", m.Recipients[i].Addr, m.Recipients[i].State, st, m.Recipients[i].Reply)
		}
	}
	if r := m.Recipients[1]; r.DSN != "4.2.2" || !strings.Contains(r.Reply, "said: 452 4.2.2 <full@store.test> Mailbox full (in reply to end of DATA command)") {
		t.Errorf("deferred recipient: %s %q", r.DSN, r.Reply)
	}
	got := ls.received()
	if len(got) != 1 || !strings.Contains(got["ok@store.test"], "Hello.") {
		t.Fatalf("LMTP server stored %v", got)
	}
	d := parseDSN(t, e.origin.Wait(1, 5*time.Second)[0].Data)
	if len(d.rcpts) != 1 {
		t.Fatalf("bounce for %d recipients", len(d.rcpts))
	}
	checkField(t, d.rcpts[0], "Final-Recipient", "rfc822; gone@store.test")
	checkField(t, d.rcpts[0], "Status", "5.1.1")
	checkField(t, d.rcpts[0], "Diagnostic-Code", "smtp; 550 5.1.1 <gone@store.test> No such user")
	if !strings.Contains(e.logs.String(), `"relay":"`+relay+`"`) {
		t.Errorf("no log line with relay %s:\n%s", relay, e.logs.String())
	}
	if ls.lhlo[0] != "relay.test" {
		t.Errorf("LHLO %q", ls.lhlo)
	}
}

// lmtp:[host]:port delivers to an LMTP server with one result per
// recipient (RFC 2033 sec 4.2).
func TestLMTPTransport(t *testing.T) {
	ls, l := newLMTPServer(t, "tcp", "127.0.0.1:0")
	port := l.Addr().(*net.TCPAddr).Port
	e := newEnv(t, func(e *env) { e.tm["store.test"] = fmt.Sprintf("lmtp:[127.0.0.1]:%d", port) })
	checkLMTPOutcomes(t, e, ls, fmt.Sprintf("127.0.0.1[127.0.0.1]:%d", port))
}

// lmtp:unix:/path speaks LMTP over a Unix-domain socket, as Postfix's
// lmtp(8) does for a local mail store.
func TestLMTPUnixSocket(t *testing.T) {
	dir, err := os.MkdirTemp("", "h12lmtp-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "lmtp.sock")
	ls, _ := newLMTPServer(t, "unix", sock)
	e := newEnv(t, func(e *env) { e.tm["store.test"] = "lmtp:unix:" + sock })
	checkLMTPOutcomes(t, e, ls, "relay.test["+sock+"]")
}

// retry:text defers with that text (error(8) run as retry), never bounces
// and never connects.
func TestRetryTransport(t *testing.T) {
	e := newEnv(t, func(e *env) { e.tm["later.test"] = "retry:4.7.1 customer asked us to hold mail" })
	id := e.enqueue("alice@origin.test", "x@later.test")
	m := e.waitAttempts(id, 1)
	r := m.Recipients[0]
	if r.State != store.RcptPending || r.DSN != "4.7.1" || r.Reply != "customer asked us to hold mail" {
		t.Fatalf("retry: %+v", r)
	}
	e.clock.Advance(time.Hour)
	e.d.Wake()
	m = e.waitAttempts(id, 2)
	if m.Recipients[0].State != store.RcptPending || e.mta.Conns() != 0 || len(e.origin.Messages()) != 0 {
		t.Fatalf("second attempt %+v, %d connections, %d notices", m.Recipients[0], e.mta.Conns(), len(e.origin.Messages()))
	}
}

// A transport holdfast cannot run (local:, virtual:, pipe services, an
// unknown name) defers with a reason that says so; it never bounces.
func TestUnavailableTransportDefers(t *testing.T) {
	e := newEnv(t, func(e *env) {
		e.tm["mbox.test"] = "local:"
		e.tm["uucp.test"] = "uucp:gateway"
	})
	id := e.enqueue("alice@origin.test", "x@mbox.test", "y@uucp.test")
	m := e.waitAttempts(id, 1)
	for i, want := range []string{"transport local is Postfix's local delivery agent, which holdfast does not run (no local or mailbox delivery)", "transport uucp is not defined"} {
		r := m.Recipients[i]
		if r.State != store.RcptPending || r.DSN != "4.3.0" || !strings.HasPrefix(r.Reply, "mail transport unavailable: ") || !strings.Contains(r.Reply, want) {
			t.Errorf("%s: %+v", r.Addr, r)
		}
	}
	if len(e.origin.Messages()) != 0 {
		t.Fatal("a notice was sent")
	}
}

// master.cf services become transports: smtp and lmtp commands with their
// -o options applied and maxproc as a concurrency cap, error as retry,
// local as a transport whose mail is deferred; unapplied options and
// unknown transports in transport_maps are start-up warnings with file
// and line.
func TestMasterCfTransports(t *testing.T) {
	dir := t.TempDir()
	master := filepath.Join(dir, "master.cf")
	os.WriteFile(master, []byte(`# ETRN_README
etrn-only unix  -       -       n       -       -       smtp
slow      unix  -       -       n       -       2       smtp
    -o smtp_connect_timeout=7s -o { smtp_helo_name = helo.example }
    -o queue_run_delay=10s -o smtp_bogus=1
mda       unix  -       -       n       -       -       lmtp -o lmtp_lhlo_name=lhlo.example
retry     unix  -       -       n       -       -       error
local     unix  -       n       n       -       -       local
smtp      inet  n       -       n       -       -       smtpd
pickup    unix  n       -       n       60      1       pickup
`), 0o644)
	transport := filepath.Join(dir, "transport")
	os.WriteFile(transport, []byte("customer.test etrn-only:[mx.customer.test]\nmbox.test local:\n# comment\nbad.test nosuch:[x]\n"), 0o644)
	c := testutil.Config(t, "master_cf", master, "transport_maps", "hash:"+transport, "defer_transports", "etrn-only")
	o, err := OptionsFromConfig(c)
	if err != nil {
		t.Fatal(err)
	}
	slow := o.TransportDefs["slow"]
	if slow.Kind != KindSMTP || slow.MaxProc != 2 || slow.Client.Timeouts.Connect != 7*time.Second || slow.Client.HeloName != "helo.example" {
		t.Errorf("slow: %+v %+v", slow, slow.Client)
	}
	if o.destLimit("slow") != 2 || o.destLimit("etrn-only") != 20 {
		t.Errorf("limits slow %d etrn-only %d", o.destLimit("slow"), o.destLimit("etrn-only"))
	}
	if mda := o.TransportDefs["mda"]; mda.Kind != KindLMTP || mda.Client.HeloName != "lhlo.example" || mda.Client.Port != 24 {
		t.Errorf("mda: %+v %+v", mda, mda.Client)
	}
	if o.TransportDefs["retry"].Kind != KindRetry || o.TransportDefs["local"].Kind != "" {
		t.Errorf("retry %+v local %+v", o.TransportDefs["retry"], o.TransportDefs["local"])
	}
	warn := strings.Join(o.Warnings, "\n")
	for _, w := range []string{
		master + ":3: service slow: -o queue_run_delay has no effect",
		master + ":3: service slow: -o smtp_bogus is an unknown parameter",
		master + ":9: service smtp/inet (smtpd) is not started from master.cf",
		transport + ":2: mbox.test: holdfast does not run the local delivery agent (" + master + ":8, service local): its mail will be deferred",
		transport + ":4: bad.test: transport nosuch is not defined",
	} {
		if !strings.Contains(warn, w) {
			t.Errorf("no warning %q in:\n%s", w, warn)
		}
	}
	if strings.Contains(warn, "pickup") || strings.Contains(warn, "customer.test") {
		t.Errorf("unexpected warning:\n%s", warn)
	}

	// An unknown level in -o is an error, as in main.cf.
	os.WriteFile(master, []byte("secure unix - - n - - smtp -o smtp_tls_security_level=verified\n"), 0o644)
	if _, err := OptionsFromConfig(c); err == nil || !strings.Contains(err.Error(), master+":1: smtp_tls_security_level: unknown level \"verified\"") {
		t.Errorf("unknown level: %v", err)
	}
	os.WriteFile(master, []byte("secure unix - - n - - smtp -o smtp_tls_security_level=secure\n"), 0o644)
	if o, err := OptionsFromConfig(c); err != nil || o.TransportDefs["secure"].Client.TLSLevel != TLSSecure {
		t.Errorf("secure level: %v", err)
	}
	// -o smtpd_* on an smtpd service would be ignored: refused.
	os.WriteFile(master, []byte("submission inet n - n - - smtpd\n  -o smtpd_client_restrictions=permit_sasl_authenticated,reject\n"), 0o644)
	if _, err := OptionsFromConfig(c); err == nil || !strings.Contains(err.Error(), "holdfast runs one SMTP server") {
		t.Errorf("smtpd -o: %v", err)
	}
}

// <transport>_destination_recipient_limit splits a message's recipients
// for one next hop into transactions of at most that many.
func TestRecipientLimit(t *testing.T) {
	e := newEnv(t, func(e *env) {
		e.o.RecipientLimit = func(transport string) int {
			if transport == "smtp" {
				return 2
			}
			return 50
		}
	})
	id := e.enqueue("alice@origin.test", "a@customer.test", "b@customer.test", "c@customer.test", "d@customer.test", "e@customer.test")
	e.waitGone(id)
	got := e.mta.Messages()
	if len(got) != 3 || len(got[0].To) != 2 || len(got[1].To) != 2 || len(got[2].To) != 1 {
		t.Fatalf("transactions %+v", got)
	}
	if e.mta.Conns() != 1 {
		t.Errorf("%d connections, want the one session reused", e.mta.Conns())
	}
}

// smtp_bind_address sets the local address of outgoing connections; a
// master.cf -o overrides it for one transport.
func TestBindAddress(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	from := make(chan string, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		from <- c.RemoteAddr().(*net.TCPAddr).IP.String()
		c.Close()
	}()
	c := testutil.Config(t, "smtp_bind_address", "127.0.0.2")
	o, err := OptionsFromConfig(c)
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, func(e *env) {
		e.o.BindAddress = o.BindAddress
		e.tm["bound.test"] = fmt.Sprintf("smtp:[127.0.0.1]:%d", l.Addr().(*net.TCPAddr).Port)
	})
	e.enqueue("alice@origin.test", "x@bound.test")
	select {
	case ip := <-from:
		if ip != "127.0.0.2" {
			t.Fatalf("connection from %s, want 127.0.0.2", ip)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no connection")
	}
	for _, bad := range [][2]string{{"smtp_bind_address", "::1"}, {"smtp_bind_address6", "127.0.0.1"}, {"smtp_bind_address", "nonsense"}} {
		if _, err := OptionsFromConfig(testutil.Config(t, bad[0], bad[1])); err == nil {
			t.Errorf("%s = %s accepted", bad[0], bad[1])
		}
	}
}

// The master.cf Postfix installs loads as is: its smtp, relay, lmtp,
// error, retry and discard services are transports, local and virtual are
// transports whose mail is deferred, the daemons whose work holdfast does
// itself pass silently, and what is not applied is reported.
func TestStockMasterCf(t *testing.T) {
	path, _ := filepath.Abs(filepath.Join("testdata", "master.cf.stock"))
	o, err := OptionsFromConfig(testutil.Config(t, "master_cf", path))
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[string]string{"smtp": KindSMTP, "relay": KindSMTP, "lmtp": KindLMTP, "error": KindError,
		"retry": KindRetry, "discard": KindDiscard, "local": "", "virtual": ""}
	for name, kind := range kinds {
		if tr := o.TransportDefs[name]; tr == nil || tr.Kind != kind {
			t.Errorf("%s: %+v, want kind %q", name, tr, kind)
		}
	}
	if len(o.TransportDefs) != len(kinds) {
		t.Errorf("transports %v", o.TransportDefs)
	}
	want := []string{
		path + ":3: service smtp/inet (smtpd) is not started from master.cf: holdfast listens on smtpd_listen",
		path + ":17: service relay: -o syslog_name has no effect on a holdfast transport",
	}
	if strings.Join(o.Warnings, "\n") != strings.Join(want, "\n") {
		t.Errorf("warnings:\n%s\nwant:\n%s", strings.Join(o.Warnings, "\n"), strings.Join(want, "\n"))
	}
}

// An LMTP server that answers the first recipient after the content and
// then hangs up: that recipient is delivered, the one whose reply never
// came is deferred (it may be delivered twice, never lost).
func TestLMTPLostAfterFirstReply(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		r := bufio.NewReader(c)
		io.WriteString(c, "220 mda.test LMTP\r\n")
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return
			}
			switch cmd := strings.ToUpper(strings.TrimSpace(line)); {
			case strings.HasPrefix(cmd, "LHLO"):
				io.WriteString(c, "250-mda.test\r\n250 PIPELINING\r\n")
			case cmd == "DATA":
				io.WriteString(c, "354 go ahead\r\n")
				for {
					l, err := r.ReadString('\n')
					if err != nil || l == ".\r\n" {
						break
					}
				}
				io.WriteString(c, "250 2.0.0 <a@store.test> delivered\r\n")
				return // and no reply for the second recipient
			default:
				io.WriteString(c, "250 ok\r\n")
			}
		}
	}()
	e := newEnv(t, func(e *env) { e.tm["store.test"] = fmt.Sprintf("lmtp:[127.0.0.1]:%d", l.Addr().(*net.TCPAddr).Port) })
	id := e.enqueue("alice@origin.test", "a@store.test", "b@store.test")
	m := e.waitMsg(id, "lmtp attempt", func(m *store.Message) bool { return m != nil && m.Recipients[1].Attempts >= 1 })
	if m.Recipients[0].State != store.RcptDelivered {
		t.Errorf("first recipient %+v", m.Recipients[0])
	}
	if r := m.Recipients[1]; r.State != store.RcptPending || !strings.Contains(r.Reply, "lost connection with 127.0.0.1[127.0.0.1] while sending end of data -- message may be sent more than once") {
		t.Errorf("second recipient %+v", r)
	}
}
