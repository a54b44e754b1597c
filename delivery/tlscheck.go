package delivery

import (
	"bytes"
	"crypto/md5"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// Trust of a TLS session's peer, in Postfix's words (tls_log_summary).
const (
	trustUntrusted = "Untrusted" // no chain to a trusted CA
	trustTrusted   = "Trusted"   // chain to a trusted CA, name not matched
	trustVerified  = "Verified"  // matched: names, fingerprint or TLSA
)

// tlsInfo is what a session's TLS came to, for the logs and Received:.
type tlsInfo struct {
	Trust    string // trustUntrusted, trustTrusted, trustVerified
	Protocol string // "TLSv1.3"
	Cipher   string // "TLS_AES_128_GCM_SHA256"
	Bits     int    // the cipher's key bits
}

// outcome is the TLS of a session for metrics: "none" for plaintext,
// else the trust in lower case.
func (i *tlsInfo) outcome() string {
	if i.Protocol == "" {
		return "none"
	}
	return strings.ToLower(i.Trust)
}

// digests are the smtp_tls_fingerprint_digest algorithms.
var digests = map[string]func() hash.Hash{"md5": md5.New, "sha1": sha1.New, "sha256": sha256.New, "sha512": sha512.New}

// checkPeer decides the trust of the server's certificate and whether it
// meets the policy. why says what failed, in Postfix's words, for the log.
func checkPeer(cs tls.ConnectionState, t target, p *tlsPolicy, now time.Time) (trust string, ok bool, why string) {
	certs := cs.PeerCertificates
	if len(certs) == 0 {
		return trustUntrusted, !needsMatch(p.level), "no server certificate"
	}
	leaf := certs[0]
	chainErr := verifyChain(certs, p.s.roots(), now)
	trust = trustUntrusted
	if chainErr == nil {
		trust = trustTrusted
	}
	switch p.level {
	case TLSFingerprint:
		if fingerprintMatch(leaf, p.match, p.s.Digest) {
			return trustVerified, true, ""
		}
		return trust, false, "certificate verification failed for " + t.Relay() + ": not trusted by local or TLSA policy"
	case TLSDane, TLSDaneOnly:
		if len(p.tlsa) > 0 {
			if daneMatch(certs, p.tlsa, daneNames(t, p), now) {
				return trustVerified, true, ""
			}
			return trust, false, "certificate verification failed for " + t.Relay() + ": not trusted by local or TLSA policy"
		}
	case TLSVerify, TLSSecure:
		if chainErr != nil {
			return trust, false, chainWhy(chainErr, leaf, t, now)
		}
		if nameMatch(leaf, matchNames(t, p)) {
			return trustVerified, true, ""
		}
		return trust, false, "server certificate verification failed for " + t.Relay() + ": num=62:hostname mismatch"
	}
	return trust, true, ""
}

// needsMatch: the level authenticates the server.
func needsMatch(level string) bool {
	return levelRank[level] >= levelRank[TLSFingerprint]
}

// verifyChain checks the peer's chain to roots at now.
func verifyChain(certs []*x509.Certificate, roots *x509.CertPool, now time.Time) error {
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	_, err := certs[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	return err
}

// chainWhy words a chain failure as Postfix's tls_verify.c.
func chainWhy(err error, leaf *x509.Certificate, t target, now time.Time) string {
	var ua x509.UnknownAuthorityError
	var ci x509.CertificateInvalidError
	switch {
	case errors.As(err, &ci) && ci.Reason == x509.Expired && now.Before(leaf.NotBefore):
		return "server certificate verification failed for " + t.Relay() + ": certificate not yet valid"
	case errors.As(err, &ci) && ci.Reason == x509.Expired:
		return "server certificate verification failed for " + t.Relay() + ": certificate has expired"
	case errors.As(err, &ua) && bytes.Equal(leaf.RawIssuer, leaf.RawSubject):
		return "certificate verification failed for " + t.Relay() + ": self-signed certificate"
	case errors.As(err, &ua):
		return "certificate verification failed for " + t.Relay() + ": untrusted issuer " + leaf.Issuer.String()
	}
	return fmt.Sprintf("server certificate verification failed for %s: %v", t.Relay(), err)
}

// matchNames turns the policy's match list into names: "hostname" is
// the server's name, "nexthop" the next-hop domain, "dot-nexthop" its
// sub-domains (".example.com"); anything else is a name as given
// (".example.com" for sub-domains of example.com).
func matchNames(t target, p *tlsPolicy) []string {
	var out []string
	for _, m := range p.match {
		switch strings.ToLower(m) {
		case "hostname":
			out = append(out, t.Name)
		case "nexthop":
			out = append(out, p.dest)
		case "dot-nexthop":
			out = append(out, "."+p.dest)
		default:
			out = append(out, m)
		}
	}
	return out
}

// certNames are the DNS names of a certificate: its subjectAltName DNS
// entries, else its common name (RFC 6125 sec 6.4.4, as Postfix).
func certNames(c *x509.Certificate) []string {
	if len(c.DNSNames) > 0 {
		return c.DNSNames
	}
	if c.Subject.CommonName != "" {
		return []string{c.Subject.CommonName}
	}
	return nil
}

// nameMatch: one of the certificate's names matches one of the wanted
// ones. A wanted ".example.com" matches names below example.com; a
// certificate's "*.example.com" matches one label in its place.
func nameMatch(c *x509.Certificate, wanted []string) bool {
	for _, cn := range certNames(c) {
		cn = strings.ToLower(strings.TrimSuffix(cn, "."))
		for _, w := range wanted {
			w = strings.ToLower(strings.TrimSuffix(w, "."))
			if w == "" || w == "." {
				continue
			}
			if oneMatch(cn, w) {
				return true
			}
		}
	}
	return false
}

func oneMatch(cn, w string) bool {
	if strings.HasPrefix(w, ".") { // sub-domains of w[1:]
		if strings.HasSuffix(cn, w) && !strings.HasPrefix(cn, "*.") {
			return true
		}
		rest, wild := strings.CutPrefix(cn, "*.")
		return wild && (rest == w[1:] || strings.HasSuffix(rest, w))
	}
	if cn == w {
		return true
	}
	if rest, wild := strings.CutPrefix(cn, "*."); wild {
		first, parent, ok := strings.Cut(w, ".")
		return ok && first != "" && parent == rest
	}
	return false
}

// fingerprintMatch: the digest of the certificate or of its public key
// is listed (Postfix's fingerprint level, "AB:CD:..." in any case).
func fingerprintMatch(c *x509.Certificate, fps []string, digest string) bool {
	mk := digests[digest]
	if mk == nil {
		return false
	}
	var sums []string
	for _, data := range [][]byte{c.Raw, c.RawSubjectPublicKeyInfo} {
		h := mk()
		h.Write(data)
		sums = append(sums, hex.EncodeToString(h.Sum(nil)))
	}
	for _, fp := range fps {
		fp = strings.ToLower(strings.ReplaceAll(strings.TrimSpace(fp), ":", ""))
		for _, s := range sums {
			if fp == s {
				return true
			}
		}
	}
	return false
}

// daneNames are the reference identifiers of a DANE-TA match (RFC 7672
// sec 3.2.2): the TLSA base domain (the server's name) and the next-hop
// domain.
func daneNames(t target, p *tlsPolicy) []string {
	return []string{t.Name, p.dest}
}

// daneMatch: a usable TLSA record matches (RFC 7672 sec 3.1): DANE-EE (3)
// the server's own certificate or key, whatever its names and dates;
// DANE-TA (2) a certificate of the chain the server sent, which then
// anchors the chain, with the names checked.
func daneMatch(certs []*x509.Certificate, recs []*dns.TLSA, names []string, now time.Time) bool {
	for _, r := range recs {
		switch r.Usage {
		case 3:
			if tlsaMatch(r, certs[0]) {
				return true
			}
		case 2:
			for i, c := range certs {
				if !tlsaMatch(r, c) {
					continue
				}
				if i == 0 { // the anchor is the server's own certificate
					if nameMatch(c, names) {
						return true
					}
					continue
				}
				anchor := x509.NewCertPool()
				anchor.AddCert(c)
				if verifyChain(certs[:i], anchor, now) == nil && nameMatch(certs[0], names) {
					return true
				}
			}
		}
	}
	return false
}

// tlsaMatch: the record's data matches c (RFC 6698 sec 2.1): selector 0
// the whole certificate, 1 its public key; matching type 0 exact, 1
// SHA-256, 2 SHA-512.
func tlsaMatch(r *dns.TLSA, c *x509.Certificate) bool {
	var data []byte
	switch r.Selector {
	case 0:
		data = c.Raw
	case 1:
		data = c.RawSubjectPublicKeyInfo
	default:
		return false
	}
	var sum []byte
	switch r.MatchingType {
	case 0:
		sum = data
	case 1:
		s := sha256.Sum256(data)
		sum = s[:]
	case 2:
		s := sha512.Sum512(data)
		sum = s[:]
	default:
		return false
	}
	want, err := hex.DecodeString(r.Certificate)
	return err == nil && bytes.Equal(want, sum)
}

// usableTLSA are the records RFC 7672 sec 3.1.3 lets SMTP use: DANE-TA
// and DANE-EE with known selectors and matching types.
func usableTLSA(recs []*dns.TLSA) []*dns.TLSA {
	var out []*dns.TLSA
	for _, r := range recs {
		if (r.Usage == 2 || r.Usage == 3) && r.Selector <= 1 && r.MatchingType <= 2 {
			out = append(out, r)
		}
	}
	return out
}
