// Package tlscert holds the server certificate of smtpd and odmr so that
// it can be replaced while the daemon runs (Reload, or a change of the
// files on disk), and reads Postfix's TLS protocol and cipher settings.
package tlscert

import (
	"crypto/tls"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Holder serves a certificate chain and key read from files. Handshakes
// get the current one through GetCertificate; Reload (the daemon's
// reload) and a change of the files' modification time or size, looked
// at once a second at most, replace it. A failed re-read keeps the
// certificate in use.
type Holder struct {
	certFile, keyFile string
	cur               atomic.Pointer[loaded]
	mu                sync.Mutex // one re-read at a time
	checked           atomic.Int64
	// OnError, if set, is told of a failed re-read after a file changed.
	OnError func(error)
}

// loaded is a certificate and the state of its files when read.
type loaded struct {
	cert  *tls.Certificate
	stamp string
}

// Load reads certFile and keyFile (keyFile "" = the key is in certFile).
func Load(certFile, keyFile string) (*Holder, error) {
	if keyFile == "" {
		keyFile = certFile
	}
	h := &Holder{certFile: certFile, keyFile: keyFile}
	if err := h.Reload(); err != nil {
		return nil, err
	}
	return h, nil
}

// stamp is the files' inodes, modification times and sizes: a file
// replaced by a rename (as certbot's and most tools' do) has a new inode
// even within the file system's timestamp granularity.
func (h *Holder) stamp() string {
	var b strings.Builder
	for _, f := range []string{h.certFile, h.keyFile} {
		if st, err := os.Stat(f); err == nil {
			var ino uint64
			if sys, ok := st.Sys().(*syscall.Stat_t); ok {
				ino = sys.Ino
			}
			fmt.Fprintf(&b, "%d/%d/%d;", ino, st.ModTime().UnixNano(), st.Size())
		}
	}
	return b.String()
}

// Reload reads the files again; on error the certificate in use stays.
func (h *Holder) Reload() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	st := h.stamp()
	pair, err := tls.LoadX509KeyPair(h.certFile, h.keyFile)
	if err != nil {
		return fmt.Errorf("tlscert: %s: %w", h.certFile, err)
	}
	h.cur.Store(&loaded{cert: &pair, stamp: st})
	return nil
}

// GetCertificate is for tls.Config.GetCertificate.
func (h *Holder) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	now := time.Now().Unix()
	if last := h.checked.Load(); now != last && h.checked.CompareAndSwap(last, now) {
		if cur := h.cur.Load(); h.stamp() != cur.stamp {
			if err := h.Reload(); err != nil && h.OnError != nil {
				h.OnError(err)
			}
		}
	}
	return h.cur.Load().cert, nil
}

// Certificate is the certificate in use.
func (h *Holder) Certificate() *tls.Certificate { return h.cur.Load().cert }

// ServerConfig is a server configuration that takes its certificate from
// h, with the TLS versions of a Postfix protocol list.
func (h *Holder) ServerConfig(protocols string) (*tls.Config, error) {
	minV, maxV, err := ProtocolRange(protocols)
	if err != nil {
		return nil, err
	}
	return &tls.Config{GetCertificate: h.GetCertificate, MinVersion: minV, MaxVersion: maxV}, nil
}

// versions are the TLS protocol versions by Postfix's names.
var versions = []struct {
	name string
	v    uint16
}{{"TLSv1", tls.VersionTLS10}, {"TLSv1.1", tls.VersionTLS11}, {"TLSv1.2", tls.VersionTLS12}, {"TLSv1.3", tls.VersionTLS13}}

// ProtocolRange reads a Postfix protocol list (">=TLSv1.2", "!SSLv2,
// !SSLv3, !TLSv1", "TLSv1.2 TLSv1.3", separated by spaces, commas or
// colons) as the least and greatest version allowed. SSLv2 and SSLv3
// are never used.
func ProtocolRange(list string) (minV, maxV uint16, err error) {
	allowed := map[uint16]bool{}
	for _, v := range versions {
		allowed[v.v] = true
	}
	var include []uint16
	for _, tok := range strings.FieldsFunc(list, func(r rune) bool { return r == ' ' || r == ',' || r == ':' || r == '\t' }) {
		v, op, ok := protocolToken(tok)
		if !ok {
			return 0, 0, fmt.Errorf("invalid TLS protocol list %q", list)
		}
		if v == 0 { // SSLv2, SSLv3: asked for, never offered
			if op == "" {
				include = append(include, 0)
			}
			continue
		}
		exclude(allowed, op, v)
		if op == "" {
			include = append(include, v)
		}
	}
	if include != nil {
		for _, x := range versions {
			allowed[x.v] = allowed[x.v] && slices.Contains(include, x.v)
		}
	}
	minV, maxV = span(allowed)
	if minV == 0 {
		return 0, 0, fmt.Errorf("TLS protocol list %q allows no protocol", list)
	}
	return minV, maxV, nil
}

// exclude applies an operator element (">=v", "<=v", "!v") to allowed.
func exclude(allowed map[uint16]bool, op string, v uint16) {
	for _, x := range versions {
		switch {
		case op == ">=" && x.v < v, op == "<=" && x.v > v, op == "!" && x.v == v:
			allowed[x.v] = false
		}
	}
}

// span is the lowest and highest allowed version (0, 0: none).
func span(allowed map[uint16]bool) (minV, maxV uint16) {
	for _, x := range versions {
		if allowed[x.v] {
			if minV == 0 {
				minV = x.v
			}
			maxV = x.v
		}
	}
	return minV, maxV
}

// protocolToken reads one element of a protocol list: an operator (">=",
// "<=", "!" or none) and a version. SSLv2 and SSLv3 are known and never
// offered: version 0.
func protocolToken(tok string) (v uint16, op string, ok bool) {
	for _, o := range []string{">=", "<=", "!"} {
		if strings.HasPrefix(tok, o) {
			op, tok = o, tok[len(o):]
			break
		}
	}
	if strings.EqualFold(tok, "SSLv2") || strings.EqualFold(tok, "SSLv3") {
		return 0, op, true
	}
	v, ok = versionOf(tok)
	return v, op, ok
}

func versionOf(name string) (uint16, bool) {
	for _, v := range versions {
		if strings.EqualFold(v.name, name) {
			return v.v, true
		}
	}
	return 0, false
}

// VersionName is Postfix's name of a TLS version ("TLSv1.3").
func VersionName(v uint16) string {
	for _, x := range versions {
		if x.v == v {
			return x.name
		}
	}
	return fmt.Sprintf("0x%04x", v)
}

// CipherGrade checks a Postfix cipher grade. Go's cipher suites are all
// of OpenSSL's "HIGH" grade, so every grade from export up is met by
// them; "null" (no encryption) is refused.
func CipherGrade(g string) error {
	switch strings.ToLower(g) {
	case "export", "low", "medium", "high":
		return nil
	}
	return fmt.Errorf("invalid cipher grade %q (export, low, medium or high)", g)
}

// CipherBits is the key size of a cipher suite's bulk cipher.
func CipherBits(id uint16) int {
	name := tls.CipherSuiteName(id)
	switch {
	case strings.Contains(name, "AES_128"):
		return 128
	case strings.Contains(name, "AES_256"), strings.Contains(name, "CHACHA20"):
		return 256
	case strings.Contains(name, "3DES"):
		return 168
	}
	return 0
}
