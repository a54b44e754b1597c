package smtpd

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/holdfast-mta/holdfast/internal/testutil"
)

// smtpd_tls_received_header: the Received: header of a message that came
// over TLS carries Postfix's TLS comment, and smtpd_tls_loglevel 1 logs
// "Anonymous TLS connection established from ...".
func TestTLSReceivedHeaderAndLog(t *testing.T) {
	var buf testutil.SyncBuffer
	e := startServer(t, newConfig(t, "smtpd_tls_received_header = yes"), withTLS, withLog(&buf))
	c := e.dial("")
	c.expect("220 *")
	c.ehlo()
	c.starttls()
	c.ehlo()
	c.send("MAIL FROM:<a@sender.test>\r\nRCPT TO:<u@customer.test>\r\nDATA\r\n")
	c.expect("250 2.1.0 Ok")
	c.expect("250 2.1.5 Ok")
	c.expect("354 *")
	c.send("Subject: t\r\n\r\nx\r\n.\r\n")
	c.expect("250 2.0.0 Ok: queued as *")
	m, body := e.onlyMessage()
	head, _, _ := strings.Cut(body, "\tfor <")
	want := regexp.MustCompile(`^Received: from client\.test \(unknown \[127\.0\.0\.1\]\)\r\n` +
		`\t\(using TLSv1\.3 with cipher TLS_[A-Z0-9_]+ \((128|256)/(128|256) bits\)\r\n` +
		`\t key-exchange [A-Za-z0-9]+\)\r\n` +
		`\t\(No client certificate requested\)\r\n` +
		`\tby relay\.test \(holdfast\) with ESMTPS id ` + string(m.ID) + `\r\n$`)
	if !want.MatchString(head) {
		t.Errorf("Received:\n%q\nwant\n%q", head, want)
	}
	found := false
	for _, ev := range logEvents(t, &buf) {
		if ev["event"] == "tls_established" {
			found = true
			if msg, _ := ev["message"].(string); !strings.HasPrefix(msg, "Anonymous TLS connection established from unknown[127.0.0.1]: TLSv1.3 with cipher TLS_") {
				t.Errorf("message %q", msg)
			}
		}
	}
	if !found {
		t.Error("no tls_established event")
	}
}

// smtpd_tls_protocols applies at level may, smtpd_tls_mandatory_protocols
// at encrypt; the certificate comes from a holder that Reload replaces.
func TestTLSProtocolsAndReload(t *testing.T) {
	dir := t.TempDir()
	ca, err := testutil.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	first, _ := ca.Issue(time.Now().Add(time.Hour), "first.test")
	cf, kf, err := testutil.PEMFiles(dir, first)
	if err != nil {
		t.Fatal(err)
	}
	base := []string{"smtpd_tls_cert_file = " + cf, "smtpd_tls_key_file = " + kf,
		"smtpd_tls_protocols = >=TLSv1.2", "smtpd_tls_mandatory_protocols = TLSv1.3"}
	o, err := OptionsFromConfig(newConfig(t, base...))
	if err != nil || o.TLS.MinVersion != 0x0303 || o.TLS.MaxVersion != 0x0304 {
		t.Fatalf("may: %v %+v", err, o.TLS)
	}
	o, err = OptionsFromConfig(newConfig(t, append(base, "smtpd_tls_security_level = encrypt")...))
	if err != nil || o.TLS.MinVersion != 0x0304 {
		t.Fatalf("encrypt: %v", err)
	}
	if c, _ := o.TLS.GetCertificate(nil); c.Leaf.Subject.CommonName != "first.test" {
		t.Fatalf("certificate %s", c.Leaf.Subject.CommonName)
	}
	second, _ := ca.Issue(time.Now().Add(time.Hour), "second.test")
	sub := filepath.Join(dir, "new")
	os.Mkdir(sub, 0o700)
	cf2, kf2, _ := testutil.PEMFiles(sub, second)
	os.Rename(cf2, cf)
	os.Rename(kf2, kf)
	if err := o.Certs.Reload(); err != nil {
		t.Fatal(err)
	}
	if c, _ := o.TLS.GetCertificate(nil); c.Leaf.Subject.CommonName != "second.test" {
		t.Fatalf("after reload: %s", c.Leaf.Subject.CommonName)
	}
	if _, err := OptionsFromConfig(newConfig(t, append(base, "smtpd_tls_ciphers = null")...)); err == nil {
		t.Error("smtpd_tls_ciphers = null accepted")
	}
}
