package auth

import (
	"crypto/hmac"
	"crypto/md5"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/holdfast-mta/holdfast/internal/testutil"
)

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

// authenticate plays the client side of mech with login and password and
// returns the login the back-end reports, or its error.
func authenticate(t *testing.T, b Backend, mech, login, password string) (string, error) {
	t.Helper()
	x, err := b.Start(mech, Info{Service: "smtp"})
	if err != nil {
		return "", err
	}
	defer x.Close()
	var ch string
	var done bool
	switch mech {
	case "PLAIN":
		_, done, err = x.Step(b64("\x00"+login+"\x00"+password), true)
	case "LOGIN":
		if ch, _, err = x.Step("", true); err == nil {
			if ch, _, err = x.Step(b64(login), false); err == nil {
				_, done, err = x.Step(b64(password), false)
			}
		}
		_ = ch
	case "CRAM-MD5":
		if ch, _, err = x.Step("", true); err == nil {
			c, _ := base64.StdEncoding.DecodeString(ch)
			m := hmac.New(md5.New, []byte(password))
			m.Write(c)
			_, done, err = x.Step(b64(login+" "+hex.EncodeToString(m.Sum(nil))), false)
		}
	}
	if err != nil {
		return "", err
	}
	if !done {
		t.Fatalf("%s: exchange not done", mech)
	}
	return x.Login(), nil
}

// Secrets of "secret" made with doveadm pw.
var users = []string{
	"# comment",
	"plain:{PLAIN}secret::::::",
	"sha:{SHA512-CRYPT}$6$sMRWOY7Gp127IM2l$OFZUd5Z47MicgHsoqsJhzVM4qODLPabi.gwZhxuejvkCYp0x.d73DSyG8olosq0YovajwLgzFxHDDF7Tc/jYf/",
	"blf:{BLF-CRYPT}$2y$05$P/G1.J4NuW6Z6mRox548jOfDUBlGPIQk9hseHW.1oC51Xd.ASxrPa",
	"cram:{CRAM-MD5}cd3ba7deaad6e5ca23448ba42e379747a9e0f7f1fbc00c8a81bbaac395731b56",
	"crypt:$6$saltstring$AIsRs/Ee56G/tC8MEHhvReZTfx8u3rXXMl6eYrjCG9ibix19DxoMBLogdTET5Ukw9Sf7eZTITsuk0Ry5qulYz.",
}

func checkBackend(t *testing.T, b Backend, cramUsers, plainOnly []string) {
	t.Helper()
	for _, mech := range []string{"PLAIN", "LOGIN"} {
		for i, u := range append(append([]string{}, cramUsers...), plainOnly...) {
			if got, err := authenticate(t, b, mech, u, "secret"); err != nil || got != u {
				t.Errorf("%s %s: got %q, %v", mech, u, got, err)
			}
			if _, slow := b.(*Dovecot); slow && i > 0 {
				continue // Dovecot delays each failure by 0.5s
			}
			var f *Failure
			if _, err := authenticate(t, b, mech, u, "wrong"); !errors.As(err, &f) || f.Temp {
				t.Errorf("%s %s wrong password: %v, want a failure", mech, u, err)
			}
		}
	}
	for i, u := range cramUsers {
		if got, err := authenticate(t, b, "CRAM-MD5", u, "secret"); err != nil || got != u {
			t.Errorf("CRAM-MD5 %s: got %q, %v", u, got, err)
		}
		if i > 0 {
			continue
		}
		if _, err := authenticate(t, b, "CRAM-MD5", u, "wrong"); err == nil {
			t.Errorf("CRAM-MD5 %s wrong password accepted", u)
		}
	}
	for i, u := range plainOnly {
		if _, slow := b.(*Dovecot); slow && i > 0 {
			break
		}
		if _, err := authenticate(t, b, "CRAM-MD5", u, "secret"); err == nil {
			t.Errorf("CRAM-MD5 %s (hashed secret) accepted", u)
		}
	}
	if _, err := authenticate(t, b, "PLAIN", "nobody", "secret"); err == nil {
		t.Error("unknown user accepted")
	}
	// Malformed base64 from the client.
	x, err := b.Start("PLAIN", Info{})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := x.Step("!!!not base64", true); !errors.Is(err, ErrMalformed) {
		t.Errorf("bad base64: %v, want ErrMalformed", err)
	}
	x.Close()
	if _, err := b.Start("NOPE", Info{}); !errors.Is(err, ErrNoMech) {
		t.Errorf("unknown mechanism: %v", err)
	}
}

func TestPasswdFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "passwd")
	if err := os.WriteFile(path, []byte(strings.Join(users, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p, err := OpenPasswdFile(path, "relay.example")
	if err != nil {
		t.Fatal(err)
	}
	checkBackend(t, p, []string{"plain", "cram"}, []string{"sha", "blf", "crypt"})
	mechs, _ := p.Mechanisms()
	if len(mechs) != 3 || mechs[2].Name != "CRAM-MD5" || !mechs[0].Plaintext {
		t.Errorf("mechanisms %+v", mechs)
	}

	// Re-read on change: a new user, and CRAM-MD5 gone with the last
	// entry that allowed it.
	os.WriteFile(path, []byte("new:{SHA512-CRYPT}"+strings.TrimPrefix(users[2], "sha:{SHA512-CRYPT}")+"\n"), 0o600)
	future := time.Now().Add(2 * time.Second)
	os.Chtimes(path, future, future)
	if got, err := authenticate(t, p, "PLAIN", "new", "secret"); err != nil || got != "new" {
		t.Errorf("after change: %q %v", got, err)
	}
	if _, err := authenticate(t, p, "PLAIN", "plain", "secret"); err == nil {
		t.Error("removed user still accepted")
	}
	if mechs, _ := p.Mechanisms(); len(mechs) != 2 {
		t.Errorf("CRAM-MD5 still offered: %+v", mechs)
	}
}

func TestPasswdFileErrors(t *testing.T) {
	dir := t.TempDir()
	for _, bad := range []string{"nocolon\n", "u:{MD5}x\n", ":{PLAIN}x\n", "u:{CRAM-MD5}12\n"} {
		path := filepath.Join(dir, "p")
		os.WriteFile(path, []byte(bad), 0o600)
		if _, err := OpenPasswdFile(path, "h"); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	if _, err := OpenPasswdFile(filepath.Join(dir, "missing"), "h"); err == nil {
		t.Error("missing file accepted")
	}
}

func TestCRAMContext(t *testing.T) {
	// doveadm pw -s CRAM-MD5 -p secret
	if got := hex.EncodeToString(cramContext("secret")); got != "cd3ba7deaad6e5ca23448ba42e379747a9e0f7f1fbc00c8a81bbaac395731b56" {
		t.Errorf("cramContext = %s", got)
	}
	m := hmac.New(md5.New, []byte("secret"))
	m.Write([]byte("<1.2@h>"))
	if got := hmacFromContext(cramContext("secret"), []byte("<1.2@h>")); !hmac.Equal(got, m.Sum(nil)) {
		t.Error("HMAC from context differs")
	}
}

func TestSecurity(t *testing.T) {
	s, err := ParseSecurity([]string{"noanonymous", "noplaintext"})
	if err != nil {
		t.Fatal(err)
	}
	if s.Allows(Mech{Name: "PLAIN", Plaintext: true}) || !s.Allows(Mech{Name: "CRAM-MD5", Dictionary: true}) {
		t.Error("noplaintext")
	}
	if _, err := ParseSecurity([]string{"bogus"}); err == nil {
		t.Error("bogus option accepted")
	}
}

// TestDovecot runs the dovecot back-end against a real Dovecot.
func TestDovecot(t *testing.T) {
	dc := testutil.StartDovecot(t, users[1], users[2], users[3], users[4])
	d := NewDovecot(dc.Socket)
	checkBackend(t, d, []string{"plain", "cram"}, []string{"sha", "blf"})
	mechs, err := d.Mechanisms()
	if err != nil || len(mechs) != 3 {
		t.Fatalf("mechanisms %+v %v", mechs, err)
	}
	// Dovecot gone: a temporary failure (454), not a wrong password.
	bad := NewDovecot(filepath.Join(t.TempDir(), "none"))
	var f *Failure
	if _, err := bad.Start("PLAIN", Info{}); !errors.As(err, &f) || !f.Temp {
		t.Errorf("no socket: %v, want a temporary failure", err)
	}
}
