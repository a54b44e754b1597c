package tlscert

import (
	"crypto/tls"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/holdfast-mta/holdfast/internal/testutil"
)

func TestProtocolRange(t *testing.T) {
	for list, want := range map[string][2]uint16{
		">=TLSv1":                       {tls.VersionTLS10, tls.VersionTLS13},
		"!SSLv2, !SSLv3, !TLSv1":        {tls.VersionTLS11, tls.VersionTLS13},
		">=TLSv1.2":                     {tls.VersionTLS12, tls.VersionTLS13},
		"<=TLSv1.2":                     {tls.VersionTLS10, tls.VersionTLS12},
		"TLSv1.2:TLSv1.3":               {tls.VersionTLS12, tls.VersionTLS13},
		"!SSLv2:!SSLv3:!TLSv1:!TLSv1.1": {tls.VersionTLS12, tls.VersionTLS13},
	} {
		lo, hi, err := ProtocolRange(list)
		if err != nil || lo != want[0] || hi != want[1] {
			t.Errorf("%q: %x %x %v", list, lo, hi, err)
		}
	}
	for _, bad := range []string{">=TLSv1.4", "!TLSv1 !TLSv1.1 !TLSv1.2 !TLSv1.3", "SSLv3"} {
		if _, _, err := ProtocolRange(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// A certificate file replaced on disk is served from the next handshake
// on (checked once a second at most); a broken file keeps the old one.
func TestFileChange(t *testing.T) {
	dir := t.TempDir()
	ca, err := testutil.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	write := func(name string) {
		c, _ := ca.Issue(time.Now().Add(time.Hour), name)
		sub, _ := os.MkdirTemp(dir, "x")
		cf, kf, err := testutil.PEMFiles(sub, c)
		if err != nil {
			t.Fatal(err)
		}
		os.Rename(cf, filepath.Join(dir, "cert.pem"))
		os.Rename(kf, filepath.Join(dir, "key.pem"))
	}
	write("a.test")
	h, err := Load(filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	name := func() string {
		h.checked.Store(0) // as if a second had passed
		c, _ := h.GetCertificate(nil)
		return c.Leaf.Subject.CommonName
	}
	if n := name(); n != "a.test" {
		t.Fatal(n)
	}
	write("b.test")
	if n := name(); n != "b.test" {
		t.Fatalf("after change: %s", n)
	}
	var failed error
	h.OnError = func(err error) { failed = err }
	os.WriteFile(filepath.Join(dir, "cert.pem"), []byte("garbage"), 0o600)
	if n := name(); n != "b.test" || failed == nil {
		t.Fatalf("after a broken file: %s %v", n, failed)
	}
}
