package smtpd

import (
	"encoding/base64"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/holdfast-mta/holdfast/internal/testutil"
	"github.com/holdfast-mta/holdfast/store"
)

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

// authConfig enables AUTH with a passwd-file; loopback is not in
// mynetworks, so relaying needs permit_sasl_authenticated.
func authConfig(t testing.TB, lines ...string) []string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "passwd")
	users := "alice:{PLAIN}secret\n" +
		"bob:{SHA512-CRYPT}$6$sMRWOY7Gp127IM2l$OFZUd5Z47MicgHsoqsJhzVM4qODLPabi.gwZhxuejvkCYp0x.d73DSyG8olosq0YovajwLgzFxHDDF7Tc/jYf/\n"
	if err := os.WriteFile(path, []byte(users), 0o600); err != nil {
		t.Fatal(err)
	}
	return append([]string{
		"mynetworks = 192.0.2.0/24",
		"smtpd_sasl_auth_enable = yes",
		"smtpd_sasl_type = passwd-file",
		"smtpd_sasl_path = " + path,
	}, lines...)
}

func TestAuthDialog(t *testing.T) {
	e := startServer(t, newConfig(t, authConfig(t, "smtpd_sasl_authenticated_header = yes", "broken_sasl_auth_clients = yes")...))
	c := e.dial("")
	c.expect("220 *")
	c.send("EHLO client.test\r\n")
	sawAuth, sawBroken := false, false
	for {
		l := c.expect("250*")
		sawAuth = sawAuth || l == "250-AUTH PLAIN LOGIN CRAM-MD5"
		sawBroken = sawBroken || l == "250-AUTH=PLAIN LOGIN CRAM-MD5"
		if strings.HasPrefix(l, "250 ") {
			break
		}
	}
	if !sawAuth || !sawBroken {
		t.Errorf("EHLO lacks AUTH PLAIN LOGIN CRAM-MD5 (%v) or AUTH=PLAIN LOGIN CRAM-MD5 (%v)", sawAuth, sawBroken)
	}
	// Not authenticated: relaying is refused.
	c.send("MAIL FROM:<a@client.test>\r\n")
	c.expect("250 2.1.0 Ok")
	c.send("RCPT TO:<x@elsewhere.test>\r\n")
	c.expect("454 4.7.1 <x@elsewhere.test>: Relay access denied")
	c.send("AUTH PLAIN " + b64("\x00alice\x00secret") + "\r\n")
	c.expect("503 5.5.1 Error: MAIL transaction in progress")
	c.send("RSET\r\n")
	c.expect("250 2.0.0 Ok")
	// Bad inputs.
	c.send("AUTH PLAIN " + b64("\x00alice\x00wrong") + "\r\n")
	c.expect("535 5.7.8 Error: authentication failed: authentication failure")
	c.send("AUTH PLAIN !!!!\r\n")
	c.expect("501 5.5.2 Cannot decode response")
	c.send("AUTH PLAIN " + strings.Repeat("QUFB", 25000) + "\r\n")
	c.expect("500 5.5.6 Authentication Exchange line is too long")
	c.send("AUTH\r\n")
	c.expect("501 5.5.4 Syntax: AUTH mechanism")
	c.send("AUTH GSSAPI\r\n")
	c.expect("535 5.7.8 Error: authentication failed: Invalid authentication mechanism")
	c.send("AUTH LOGIN\r\n")
	c.expect("334 VXNlcm5hbWU6")
	c.send("*\r\n")
	c.expect("501 5.7.0 Authentication aborted")
	c.send("AUTH LOGIN\r\n")
	c.expect("334 VXNlcm5hbWU6")
	c.send(strings.Repeat("A", 5000) + "\r\n")
	c.expect("500 5.5.6 Authentication Exchange line is too long")
	// LOGIN, then the relay opens.
	c.send("AUTH LOGIN " + b64("bob") + "\r\n")
	c.expect("334 UGFzc3dvcmQ6")
	c.send(b64("secret") + "\r\n")
	c.expect("235 2.7.0 Authentication successful")
	c.send("AUTH PLAIN " + b64("\x00alice\x00secret") + "\r\n")
	c.expect("503 5.5.1 Error: already authenticated")
	c.send("MAIL FROM:<a@client.test> AUTH=<> AUTH=<>\r\n")
	c.expect("503 5.5.4 Error: multiple AUTH= options")
	c.send("MAIL FROM:<a@client.test> AUTH=bob+40client.test\r\n")
	c.expect("250 2.1.0 Ok")
	c.send("RCPT TO:<x@elsewhere.test>\r\n")
	c.expect("250 2.1.5 Ok")
	c.send("DATA\r\n")
	c.expect("354 *")
	c.send("Subject: t\r\n\r\nhi\r\n.\r\n")
	id := strings.TrimPrefix(c.expect("250 2.0.0 Ok: queued as *"), "250 2.0.0 Ok: queued as ")
	c.send("QUIT\r\n")
	c.expect("221 2.0.0 Bye")
	body, err := e.st.Body(store.ID(id))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(body), "\t(Authenticated sender: bob)\r\n\tby relay.test (holdfast) with ESMTPA id ") {
		t.Errorf("Received: header lacks the login or ESMTPA:\n%s", body)
	}
}

func TestAuthTLSOnly(t *testing.T) {
	e := startServer(t, newConfig(t, authConfig(t, "smtpd_tls_auth_only = yes")...), withTLS)
	c := e.dial("")
	c.expect("220 *")
	c.send("EHLO client.test\r\n")
	for l := ""; !strings.HasPrefix(l, "250 "); {
		if l = c.expect("250*"); strings.Contains(l, "AUTH") {
			t.Errorf("AUTH offered before STARTTLS: %q", l)
		}
	}
	c.send("AUTH PLAIN " + b64("\x00alice\x00secret") + "\r\n")
	c.expect("504 5.5.4 Encryption required for requested authentication mechanism")
	c.starttls()
	c.ehlo()
	c.send("AUTH PLAIN " + b64("\x00alice\x00secret") + "\r\n")
	c.expect("235 2.7.0 Authentication successful")

	// swaks: refused without TLS, accepted with it.
	swaks := testutil.Tool(t, "swaks")
	host, port, _ := strings.Cut(e.addr, ":")
	args := []string{"--server", host, "--port", port, "--from", "a@client.test", "--to", "x@elsewhere.test",
		"--auth", "PLAIN", "--auth-user", "alice", "--auth-password", "secret", "--helo", "client.test"}
	if out, err := exec.Command(swaks, args...).CombinedOutput(); err == nil || !strings.Contains(string(out), "did not advertise") {
		t.Errorf("swaks without TLS: %v\n%s", err, out)
	}
	if out, err := exec.Command(swaks, append(args, "--tls")...).CombinedOutput(); err != nil {
		t.Errorf("swaks with TLS: %v\n%s", err, out)
	}
}

// noplaintext without TLS, plaintext allowed with it: 538 before
// STARTTLS (RFC 4954 sec 6), CRAM-MD5 still offered.
func TestAuthSecurityOptions(t *testing.T) {
	e := startServer(t, newConfig(t, authConfig(t,
		"smtpd_sasl_security_options = noanonymous, noplaintext",
		"smtpd_sasl_tls_security_options = noanonymous")...), withTLS)
	c := e.dial("")
	c.expect("220 *")
	c.send("EHLO client.test\r\n")
	sawAuth := ""
	for l := ""; !strings.HasPrefix(l, "250 "); {
		if l = c.expect("250*"); strings.Contains(l, "AUTH") {
			sawAuth = l
		}
	}
	if sawAuth != "250-AUTH CRAM-MD5" {
		t.Errorf("EHLO before TLS offers %q", sawAuth)
	}
	c.send("AUTH PLAIN " + b64("\x00alice\x00secret") + "\r\n")
	c.expect("538 5.7.11 Encryption required for requested authentication mechanism")
	c.starttls()
	c.ehlo()
	c.send("AUTH PLAIN " + b64("\x00alice\x00secret") + "\r\n")
	c.expect("235 2.7.0 Authentication successful")
}

func TestAuthRateLimit(t *testing.T) {
	e := startServer(t, newConfig(t, authConfig(t, "smtpd_client_auth_rate_limit = 2")...))
	c := e.dial("")
	c.expect("220 *")
	c.ehlo()
	for range 2 {
		c.send("AUTH PLAIN " + b64("\x00alice\x00wrong") + "\r\n")
		c.expect("535 5.7.8 *")
	}
	c.send("AUTH PLAIN " + b64("\x00alice\x00secret") + "\r\n")
	c.expect("450 4.7.1 Error: too many AUTH commands from 127.0.0.1")
	// The limit is per client, across sessions.
	c2 := e.dial("")
	c2.expect("220 *")
	c2.ehlo()
	c2.send("AUTH PLAIN " + b64("\x00alice\x00secret") + "\r\n")
	c2.expect("450 4.7.1 *")
}

func TestAuthDisabled(t *testing.T) {
	e := startServer(t, newConfig(t))
	c := e.dial("")
	c.expect("220 *")
	c.ehlo()
	c.send("AUTH PLAIN " + b64("\x00alice\x00secret") + "\r\n")
	c.expect("503 5.5.1 Error: authentication not enabled")
	c.send("MAIL FROM:<a@client.test> AUTH=<>\r\n")
	c.expect("555 5.5.4 Unsupported option: AUTH=<>")
}

// TestAuthDovecot: smtpd with smtpd_sasl_type = dovecot against a real
// Dovecot.
func TestAuthDovecot(t *testing.T) {
	dc := testutil.StartDovecot(t, "carol:{PLAIN}pw")
	e := startServer(t, newConfig(t, "mynetworks = 192.0.2.0/24", "smtpd_sasl_auth_enable = yes",
		"smtpd_sasl_type = dovecot", "smtpd_sasl_path = "+dc.Socket))
	c := e.dial("")
	c.expect("220 *")
	c.ehlo()
	c.send("AUTH LOGIN\r\n")
	c.expect("334 VXNlcm5hbWU6")
	c.send(b64("carol") + "\r\n")
	c.expect("334 UGFzc3dvcmQ6")
	c.send(b64("pw") + "\r\n")
	c.expect("235 2.7.0 Authentication successful")
	c.send("MAIL FROM:<a@client.test>\r\nRCPT TO:<x@elsewhere.test>\r\n")
	c.expect("250 2.1.0 Ok")
	c.expect("250 2.1.5 Ok")
	c2 := e.dial("")
	c2.expect("220 *")
	c2.ehlo()
	c2.send("AUTH PLAIN " + b64("\x00carol\x00bad") + "\r\n")
	c2.expect("535 5.7.8 Error: authentication failed: authentication failure")
}

// TestAuthSwaks: swaks (a real client) with PLAIN, LOGIN and CRAM-MD5,
// with and without TLS.
func TestAuthSwaks(t *testing.T) {
	swaks := testutil.Tool(t, "swaks")
	e := startServer(t, newConfig(t, authConfig(t)...), withTLS)
	host, port, _ := strings.Cut(e.addr, ":")
	for _, mech := range []string{"PLAIN", "LOGIN", "CRAM-MD5"} {
		for _, tls := range []bool{false, true} {
			args := []string{"--server", host, "--port", port, "--from", "a@client.test", "--to", "x@elsewhere.test",
				"--auth", mech, "--auth-user", "alice", "--auth-password", "secret", "--helo", "client.test", "--hide-all"}
			if tls {
				args = append(args, "--tls")
			}
			if out, err := exec.Command(swaks, args...).CombinedOutput(); err != nil {
				t.Errorf("swaks %s tls=%v: %v\n%s", mech, tls, err, out)
			}
		}
		args := []string{"--server", host, "--port", port, "--from", "a@client.test", "--to", "x@elsewhere.test",
			"--auth", mech, "--auth-user", "alice", "--auth-password", "wrong", "--helo", "client.test"}
		out, err := exec.Command(swaks, args...).CombinedOutput()
		if err == nil || !strings.Contains(string(out), "535 5.7.8 Error: authentication failed") {
			t.Errorf("swaks %s wrong password: %v\n%s", mech, err, out)
		}
	}
	if n := e.queued(); n != 6 {
		t.Errorf("%d messages queued, want 6", n)
	}
}

// TestETRNOwners: etrn_login_maps lets an owner ETRN from anywhere and
// keeps everybody else off a listed destination.
func TestETRNOwners(t *testing.T) {
	e := startServer(t, newConfig(t, authConfig(t,
		"smtpd_etrn_restrictions = permit", // open: ownership must still hold
		"etrn_login_maps = inline:{ customer.test=alice, @empty.test=bob }")...))
	m := &store.Message{ID: store.NewID(), Sender: "a@sender.test", Arrival: time.Now(), State: store.StateDeferred,
		Recipients: []store.Recipient{{Addr: "x@customer.test", NextAttempt: time.Now().Add(time.Hour)}}}
	if err := e.st.Enqueue(m, []byte("Subject: x\r\n\r\nx\r\n")); err != nil {
		t.Fatal(err)
	}
	notFlushed := func() {
		t.Helper()
		if due, ok, err := e.st.NextDue(); err != nil || !ok || time.Until(due) < 30*time.Minute {
			t.Fatalf("queue flushed (next due %v, %v, %v)", due, ok, err)
		}
	}
	c := e.dial("")
	c.expect("220 *")
	c.ehlo()
	c.send("ETRN customer.test\r\n")
	c.expect("554 5.7.1 <customer.test>: Etrn command rejected: Authentication required for this destination")
	c.send("AUTH PLAIN " + b64("\x00bob\x00secret") + "\r\n")
	c.expect("235 *")
	c.send("ETRN customer.test\r\n")
	c.expect("554 5.7.1 <customer.test>: Etrn command rejected: Destination not owned by bob")
	notFlushed()
	c.send("ETRN other.test\r\n") // unlisted, but bob may ETRN only his own
	c.expect("554 5.7.1 <other.test>: Etrn command rejected: Destination not owned by bob")
	c.send("ETRN @empty.test\r\n")
	c.expect("250 Queuing started")
	c.send("ETRN sub.empty.test\r\n")
	c.expect("250 Queuing started")

	c2 := e.dial("")
	c2.expect("220 *")
	c2.ehlo()
	c2.send("ETRN other.test\r\n") // unlisted, not authenticated: smtpd_etrn_restrictions, then eligibility
	c2.expect("459 <other.test>: service unavailable")
	c2.send("AUTH PLAIN " + b64("\x00alice\x00secret") + "\r\n")
	c2.expect("235 *")
	c2.send("ETRN customer.test\r\n")
	c2.expect("250 Queuing started")
	if due, _, _ := e.st.NextDue(); time.Until(due) > time.Minute {
		t.Errorf("owner's ETRN did not flush (next due %v)", due)
	}
}

// TestPermitSASLEveryStage: permit_sasl_authenticated decides in each
// restriction list.
func TestPermitSASLEveryStage(t *testing.T) {
	for _, param := range []string{"smtpd_client_restrictions", "smtpd_helo_restrictions", "smtpd_sender_restrictions",
		"smtpd_relay_restrictions", "smtpd_recipient_restrictions"} {
		t.Run(param, func(t *testing.T) {
			e := startServer(t, newConfig(t, authConfig(t, param+" = permit_sasl_authenticated, reject")...))
			c := e.dial("")
			c.expect("220 *")
			c.ehlo()
			c.send("MAIL FROM:<a@client.test>\r\n")
			c.expect("250 2.1.0 Ok")
			c.send("RCPT TO:<x@customer.test>\r\n")
			c.expect("554 5.7.1 *")
			c.send("RSET\r\n")
			c.expect("250 2.0.0 Ok")
			c.send("AUTH PLAIN " + b64("\x00alice\x00secret") + "\r\n")
			c.expect("235 *")
			c.send("MAIL FROM:<a@client.test>\r\n")
			c.expect("250 2.1.0 Ok")
			c.send("RCPT TO:<x@customer.test>\r\n")
			c.expect("250 2.1.5 Ok")
		})
	}
}

func TestPermitSASLEtrn(t *testing.T) {
	e := startServer(t, newConfig(t, authConfig(t, "smtpd_etrn_restrictions = permit_sasl_authenticated, reject")...))
	c := e.dial("")
	c.expect("220 *")
	c.ehlo()
	c.send("ETRN customer.test\r\n")
	c.expect("554 5.7.1 <customer.test>: Etrn command rejected: Access denied")
	c.send("AUTH PLAIN " + b64("\x00alice\x00secret") + "\r\n")
	c.expect("235 *")
	c.send("ETRN customer.test\r\n")
	c.expect("250 Queuing started")
}
