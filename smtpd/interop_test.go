package smtpd

import (
	"context"
	"crypto/tls"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// TestInteropGoSMTP sends through the server with go-smtp's client,
// with STARTTLS, DSN parameters and SMTPUTF8.
func TestInteropGoSMTP(t *testing.T) {
	e := startServer(t, newConfig(t), withTLS)
	c, err := smtp.DialStartTLS(e.addr, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Hello("client.test"); err != nil {
		t.Fatal(err)
	}
	if ok, _ := c.Extension("ETRN"); !ok {
		t.Error("ETRN not announced")
	}
	if ok, _ := c.Extension("STARTTLS"); ok {
		t.Error("STARTTLS announced inside TLS")
	}
	ret := smtp.DSNReturnHeaders
	if err := c.Mail("a@sender.test", &smtp.MailOptions{Return: ret, EnvelopeID: "env 1", Body: smtp.Body8BitMIME, UTF8: true, Size: 20}); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt("ü@customer.test", &smtp.RcptOptions{Notify: []smtp.DSNNotify{smtp.DSNNotifyFailure}, OriginalRecipientType: smtp.DSNAddressTypeRFC822, OriginalRecipient: "u@customer.test"}); err != nil {
		t.Fatal(err)
	}
	w, err := c.Data()
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("Subject: go-smtp\r\n\r\n.leading dot\r\n"))
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Quit(); err != nil {
		t.Fatal(err)
	}
	m, body := e.onlyMessage()
	if m.Protocol != "ESMTPS" || m.EnvID != "env 1" || !m.SMTPUTF8 || m.Recipients[0].Orig != "rfc822;u@customer.test" {
		t.Errorf("envelope %+v", m)
	}
	if !strings.HasSuffix(body, "\r\nSubject: go-smtp\r\n\r\n.leading dot\r\n") || !strings.Contains(body, "with ESMTPS id") {
		t.Errorf("body %q", body)
	}
}

// TestInteropPython sends with Python's smtplib (sendmail, then ETRN via
// docmd), when python3 is installed.
func TestInteropPython(t *testing.T) {
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("python3 not installed")
	}
	e := startServer(t, newConfig(t))
	host, port, _ := strings.Cut(e.addr, ":")
	script := `
import smtplib, sys
s = smtplib.SMTP(sys.argv[1], int(sys.argv[2]), timeout=10)
s.ehlo("client.test")
assert s.has_extn("pipelining") and s.has_extn("etrn"), s.esmtp_features
s.sendmail("a@sender.test", ["u1@customer.test", "u2@customer.test"],
           "Subject: python\r\n\r\nline\r\n.dotted\r\n", mail_options=["BODY=8BITMIME"])
code, msg = s.docmd("ETRN", "customer.test")
assert code == 250 and msg == b"Queuing started", (code, msg)
s.quit()
`
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, py, "-c", script, host, port)
	cmd.Env = append(os.Environ(), "PYTHONDONTWRITEBYTECODE=1")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("python: %v\n%s", err, out)
	}
	m, body := e.onlyMessage()
	if len(m.Recipients) != 2 || !strings.HasSuffix(body, "Subject: python\r\n\r\nline\r\n.dotted\r\n") {
		t.Errorf("message %+v body %q", m, body)
	}
}
