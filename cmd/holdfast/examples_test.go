package main

// Postfix's own example configurations served by holdfast without edits
// (issue 12): each test starts the daemon on a README's main.cf (and
// master.cf, tables) from testdata/examples, with /etc/postfix paths
// adapted and a test header that only places the daemon (listen
// addresses, queue, DNS server), then checks a transcript.

import (
	"bufio"
	"fmt"
	"net"
	"net/textproto"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/holdfast-mta/holdfast/config"
	"github.com/holdfast-mta/holdfast/internal/testutil"
)

// example is a daemon started on one README example.
type example struct {
	t     *testing.T
	d     *daemon
	mta   *testutil.MTA
	dns   *testutil.DNS
	addrs map[string]string // client source ("127.0.0.1", "::1") -> listener
	logs  *testutil.SyncBuffer
}

// exampleHeader places the daemon for the test; everything else comes
// from the README. mynetworks is the README's when it sets one (set after
// this header, it wins); otherwise only 127.0.0.1 is trusted, so that a
// client from ::1 is an outside client.
const exampleHeader = `# test environment, not from the README
myhostname = mx.example.net
mynetworks = 127.0.0.1/32
smtpd_listen = 127.0.0.1:0, [::1]:0
queue_directory = @DIR@/queue
control_socket =
dns_resolver = @DNS@
`

// startExample copies testdata/examples/name into a temporary directory
// (replacing @DIR@, @MTA@ and @DNS@), and starts the daemon on its
// main.cf, with extra lines appended. It returns the start-up error
// instead of failing when wantErr is set.
func startExample(t *testing.T, name string, extra string, records ...string) (*example, error) {
	t.Helper()
	e := &example{t: t, mta: testutil.NewMTA(t, testutil.MTAOptions{}), logs: &testutil.SyncBuffer{}}
	e.dns = testutil.NewDNS(t, append([]string{
		"their.mail.host.tld. 300 IN A 127.0.0.1",
		"inside-gateway.example.com. 300 IN A 127.0.0.1",
		"mailhost.customer.tld. 300 IN A 127.0.0.1",
		"client.example.org. 300 IN A 192.0.2.7",
		"example.org. 300 IN MX 10 mx.example.org.",
		"mx.example.org. 300 IN A 192.0.2.8",
	}, records...)...)
	dir := t.TempDir()
	src := filepath.Join("testdata", "examples", name)
	ents, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	subst := strings.NewReplacer("@DIR@", dir, "@MTA@", fmt.Sprint(e.mta.Port), "@DNS@", e.dns.Addr)
	for _, ent := range ents {
		data, err := os.ReadFile(filepath.Join(src, ent.Name()))
		if err != nil {
			t.Fatal(err)
		}
		text := subst.Replace(string(data))
		if ent.Name() == "main.cf" {
			text = subst.Replace(exampleHeader) + text + subst.Replace(extra)
		}
		if err := os.WriteFile(filepath.Join(dir, ent.Name()), []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	c, err := config.Load(filepath.Join(dir, "main.cf"))
	if err != nil {
		return nil, err
	}
	for _, w := range c.Warnings() {
		e.logs.Write([]byte("warning: " + w + "\n"))
	}
	log := zerolog.New(zerolog.MultiLevelWriter(zerolog.NewTestWriter(t), e.logs)).Level(zerolog.InfoLevel)
	d, err := startDaemon(c, log)
	if err != nil {
		return nil, err
	}
	e.d = d
	t.Cleanup(func() {
		r := &relay{t: t, d: d}
		r.stop()
	})
	e.addrs = map[string]string{}
	for _, a := range d.smtpAddrs() {
		host, _, _ := net.SplitHostPort(a)
		e.addrs[host] = a
	}
	return e, nil
}

// mustStart is startExample for an example that must start.
func mustStart(t *testing.T, name, extra string, records ...string) *example {
	t.Helper()
	e, err := startExample(t, name, extra, records...)
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	return e
}

// transcript plays testdata/examples/name/file: "=== ADDR" opens a
// session from that client address (127.0.0.1 or ::1) to the listener of
// the same family, "C: line" is sent, "S: reply" must equal the last line
// of the next reply ("*" at the end: a prefix).
func (e *example) transcript(name, file string) {
	t := e.t
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", "examples", name, file))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var conn *textproto.Conn
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		where := fmt.Sprintf("%s/%s:%d", name, file, n)
		switch {
		case strings.HasPrefix(line, "=== "):
			addr := e.addrs[strings.TrimPrefix(line, "=== ")]
			if addr == "" {
				t.Fatalf("%s: no listener for %q", where, line)
			}
			nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
			if err != nil {
				t.Fatalf("%s: %v", where, err)
			}
			nc.SetDeadline(time.Now().Add(30 * time.Second))
			conn = textproto.NewConn(nc)
			t.Cleanup(func() { nc.Close() })
		case strings.HasPrefix(line, "C: "), line == "C:":
			if err := conn.PrintfLine("%s", strings.TrimPrefix(strings.TrimPrefix(line, "C:"), " ")); err != nil {
				t.Fatalf("%s: send: %v", where, err)
			}
		case strings.HasPrefix(line, "S: "):
			want := strings.TrimPrefix(line, "S: ")
			got := lastReplyLine(t, conn, where)
			if p, ok := strings.CutSuffix(want, "*"); ok && strings.HasPrefix(got, p) || got == want {
				continue
			}
			t.Fatalf("%s: got %q, want %q\nlog:\n%s", where, got, want, e.logs.String())
		}
	}
}

func lastReplyLine(t *testing.T, conn *textproto.Conn, where string) string {
	t.Helper()
	for {
		l, err := conn.ReadLine()
		if err != nil {
			t.Fatalf("%s: read: %v", where, err)
		}
		if len(l) < 4 || l[3] != '-' {
			return l
		}
	}
}

// STANDARD_CONFIGURATION_README, primary/backup MX for a remote site:
// relay_recipient_maps keeps unknown users out at RCPT (no backscatter),
// relay:[their.mail.host.tld] delivers the rest.
func TestExampleBackupMX(t *testing.T) {
	e := mustStart(t, "backup_mx", "")
	e.transcript("backup_mx", "transcript.txt")
	got := e.mta.Wait(1, 10*time.Second)
	if len(got) != 1 || strings.Join(got[0].To, ",") != "user1@the.backed-up.domain.tld" {
		t.Fatalf("delivered %+v", got)
	}
}

// STANDARD_CONFIGURATION_README, email firewall/gateway: mail for
// user@example.com from outside goes to the inside gateway, mail for
// anything.example.com and unknown users is refused at RCPT, inside
// clients relay anywhere. The example's part 2 (virtual_alias_maps for
// postmaster@[firewall ip]) is address rewriting, which holdfast does not
// do: it is refused at start-up, naming file and line, never ignored.
func TestExampleFirewall(t *testing.T) {
	e := mustStart(t, "firewall", "")
	e.transcript("firewall", "transcript.txt")
	got := e.mta.Wait(1, 10*time.Second)
	if len(got) != 1 || strings.Join(got[0].To, ",") != "user1@example.com" {
		t.Fatalf("delivered %+v", got)
	}
	if w := e.logs.String(); !strings.Contains(w, "mydestination: accepted for compatibility, no effect in holdfast") {
		t.Errorf("no warning for mydestination:\n%s", w)
	}

	_, err := startExample(t, "firewall", "virtual_alias_maps = hash:@DIR@/virtual\n")
	if err == nil || !strings.Contains(err.Error(), "main.cf:30: virtual_alias_maps: not supported by holdfast: address rewriting is not supported") {
		t.Fatalf("part 2: %v", err)
	}
}

// SMTPD_ACCESS_README's restriction lists: each stage answers where
// Postfix answers it (delayed to RCPT); the policy-service line, which
// holdfast does not implement, is refused at start-up.
func TestExampleSMTPDAccess(t *testing.T) {
	_, err := startExample(t, "smtpd_access", "smtpd_end_of_data_restrictions = check_policy_service unix:private/policy\n")
	if err == nil || !strings.Contains(err.Error(), `smtpd_end_of_data_restrictions: unknown restriction "check_policy_service"`) {
		t.Fatalf("policy service: %v", err)
	}
	e := mustStart(t, "smtpd_access", "")
	e.transcript("smtpd_access", "transcript.txt")
}

// SMTPD_ACCESS_README's dangerous smtpd_recipient_restrictions: with
// smtpd_relay_restrictions at its default, HELO localhost.localdomain
// does not open the relay.
func TestExampleDangerousRecipientRestrictions(t *testing.T) {
	e := mustStart(t, "dangerous", "")
	e.transcript("dangerous", "transcript.txt")
}

// ETRN_README's ETRN-only customer, its master.cf lines used unchanged:
// mail waits without a delivery attempt until the customer's ETRN, which
// is answered as the README's test session shows.
func TestExampleETRN(t *testing.T) {
	e := mustStart(t, "etrn", "")
	e.transcript("etrn", "mail.txt")
	r := &relay{t: t, d: e.d, mta: e.mta}
	r.waitDeferred(1)
	r.quiet(200 * time.Millisecond)
	e.transcript("etrn", "etrn.txt")
	if got := e.mta.Wait(1, 10*time.Second); len(got) != 1 || got[0].To[0] != "user@customer.tld" {
		t.Fatalf("delivered %+v", got)
	}
	r.waitEmpty()
	if strings.Contains(e.logs.String(), "master.cf") {
		t.Errorf("warnings about the README's master.cf:\n%s", e.logs.String())
	}
}
