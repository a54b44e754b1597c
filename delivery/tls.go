package delivery

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/miekg/dns"

	"github.com/holdfast-mta/holdfast/config"
	"github.com/holdfast-mta/holdfast/dnsr"
	"github.com/holdfast-mta/holdfast/internal/tlscert"
)

// TLS levels of smtp_tls_security_level, as Postfix's TLS_README defines
// them.
const (
	TLSNone        = "none"
	TLSMay         = "may"         // STARTTLS when offered, plaintext otherwise
	TLSEncrypt     = "encrypt"     // STARTTLS required; certificate not checked
	TLSFingerprint = "fingerprint" // the certificate or key digest is listed
	TLSVerify      = "verify"      // trusted CA and a matching name
	TLSSecure      = "secure"      // as verify, with the stricter default names
	TLSDane        = "dane"        // RFC 7672 when TLSA records are secure, else may
	TLSDaneOnly    = "dane-only"   // RFC 7672 or no delivery
)

// levelRank orders the levels by what they demand; every level above may
// requires TLS (Postfix's TLS_REQUIRED_BY_SECURITY_LEVEL).
var levelRank = map[string]int{TLSNone: 0, TLSMay: 1, TLSEncrypt: 2, TLSFingerprint: 3, TLSDane: 3, TLSDaneOnly: 3, TLSVerify: 4, TLSSecure: 5}

// TLSSettings are the smtp_tls_* parameters beyond the level, shared by
// the SMTP transports.
type TLSSettings struct {
	// Roots are the CAs trusted at verify and secure (smtp_tls_CAfile and
	// smtp_tls_CApath); nil = the system's roots. They also decide
	// whether a session at a lower level is logged Trusted or Untrusted.
	Roots *x509.CertPool
	// Cert is the client certificate offered to servers that ask
	// (smtp_tls_cert_file, smtp_tls_key_file); nil = none.
	Cert *tls.Certificate
	// VerifyMatch and SecureMatch are the names or strategies (hostname,
	// nexthop, dot-nexthop) a certificate must match at verify and
	// secure (smtp_tls_verify_cert_match, smtp_tls_secure_cert_match).
	VerifyMatch, SecureMatch []string
	// Fingerprints are the digests accepted at fingerprint
	// (smtp_tls_fingerprint_cert_match), made with Digest
	// (smtp_tls_fingerprint_digest).
	Fingerprints []string
	Digest       string
	// Protocols are smtp_tls_protocols (level may) and
	// MandatoryProtocols smtp_tls_mandatory_protocols (encrypt and up).
	Protocols, MandatoryProtocols string
	// Ciphers, MandatoryCiphers: smtp_tls_ciphers, smtp_tls_mandatory_ciphers.
	Ciphers, MandatoryCiphers string
	// Policy is smtp_tls_policy_maps; nil = none.
	Policy TransportTable
	// DNSSEC: smtp_dns_support_level = dnssec, which dane needs.
	DNSSEC bool
	// LogLevel is smtp_tls_loglevel: 0 logs failures only, 1 also a
	// summary line per session.
	LogLevel int
}

// DefaultTLS are the smtp_tls_* settings of the defaults table
// (config/params.go), as TLSFromConfig reads them from an empty
// configuration.
func DefaultTLS() *TLSSettings {
	return config.FromDefaults("delivery", TLSFromConfig)
}

// tlsPolicy is the TLS policy for one session: the effective level and
// its attributes, from the transport's level and smtp_tls_policy_maps.
type tlsPolicy struct {
	level     string
	match     []string // names (verify, secure) or fingerprints
	protocols string
	tlsa      []*dns.TLSA // dane: the usable TLSA records
	dest      string      // the next-hop domain, for nexthop matching
	s         *TLSSettings
}

// required: the level forbids plaintext.
func (p *tlsPolicy) required() bool { return levelRank[p.level] >= levelRank[TLSEncrypt] }

// policyFor works out the TLS policy of a session with t: the
// transport's level, then smtp_tls_policy_maps (next hop, then its parent
// domains as ".parent"), then the level's own settings. A policy that
// cannot be applied is a 4.7.5 session failure (or 4.3.0 for a table
// error), never a quiet downgrade.
func (d *Scheduler) policyFor(ctx context.Context, t target) (*tlsPolicy, error) {
	s := t.cf.TLS
	if s == nil {
		s = DefaultTLS()
	}
	p := &tlsPolicy{level: t.cf.TLSLevel, s: s, dest: nexthopDomain(t.dest)}
	if p.level == "" {
		p.level = TLSNone
	}
	if s.Policy != nil && !t.lmtp && t.dest != "" {
		v, key, err := lookupPolicy(s.Policy, t.dest)
		if err != nil {
			d.log.Warn().Msgf("smtp_tls_policy_maps, next-hop destination %q: policy table lookup error: %v", t.dest, err)
			return nil, &sessionError{transient(t, "4.3.0", "Temporary lookup error")}
		}
		if key != "" {
			if err := p.parse(v); err != nil {
				d.log.Warn().Msgf("smtp_tls_policy_maps, next-hop destination %q: %v", key, err)
				return nil, &sessionError{transient(t, "4.7.5", "client TLS configuration problem")}
			}
		}
	}
	if p.level == TLSDane || p.level == TLSDaneOnly {
		if err := d.daneInit(ctx, t, p); err != nil {
			return nil, err
		}
	}
	switch p.level {
	case TLSVerify, TLSSecure:
		if p.match == nil {
			p.match = s.VerifyMatch
			if p.level == TLSSecure {
				p.match = s.SecureMatch
			}
		}
	case TLSFingerprint:
		if p.match == nil {
			p.match = s.Fingerprints
		}
		if len(p.match) == 0 {
			d.log.Warn().Msgf("nexthop domain %s: configured at fingerprint security level, but with no fingerprints to match.", t.dest)
			return nil, &sessionError{transient(t, "4.7.5", "client TLS configuration problem")}
		}
	}
	if p.protocols == "" {
		p.protocols = s.MandatoryProtocols
		if p.level == TLSMay {
			p.protocols = s.Protocols
		}
	}
	return p, nil
}

// lookupPolicy asks the policy table for dest, then, for a domain, for
// its parent domains (".example.com", ".com"), as Postfix's
// tls_policy_lookup. An explicit next hop ("[host]:port") is looked up as
// given only. key is the key that matched, "" for none.
func lookupPolicy(tab TransportTable, dest string) (value, key string, err error) {
	name := dest
	for {
		v, ok, err := tab.Lookup(name)
		if err != nil {
			return "", "", err
		}
		if ok {
			return v, name, nil
		}
		if strings.ContainsAny(dest, "[]:/") {
			return "", "", nil
		}
		i := strings.IndexByte(name[1:], '.')
		if i < 0 {
			return "", "", nil
		}
		name = name[i+1:]
	}
}

// parse reads a policy table value: a level and attributes
// (smtp_tls_policy_maps in Postfix's postconf(5)): match= (names separated
// by ":", fingerprints by "|"), protocols=, ciphers=. Any other attribute
// makes the policy invalid: it would be ignored otherwise.
func (p *tlsPolicy) parse(v string) error {
	f := strings.FieldsFunc(v, func(r rune) bool { return r == ' ' || r == '\t' || r == ',' })
	if len(f) == 0 {
		return errors.New("invalid empty policy")
	}
	lvl := strings.ToLower(f[0])
	if _, ok := levelRank[lvl]; !ok {
		return fmt.Errorf("invalid security level %q", f[0])
	}
	p.level = lvl
	seen := map[string]bool{}
	for _, a := range f[1:] {
		name, val, ok := strings.Cut(a, "=")
		name = strings.ToLower(name)
		if !ok || val == "" {
			return fmt.Errorf("malformed attribute/value pair %q", a)
		}
		if seen[name] {
			return fmt.Errorf("attribute %q is specified multiple times", name)
		}
		seen[name] = true
		switch name {
		case "match":
			switch lvl {
			case TLSFingerprint:
				p.match = strings.Split(val, "|")
			case TLSVerify, TLSSecure:
				p.match = strings.Split(val, ":")
			default:
				return fmt.Errorf("attribute %q invalid at security level %q", name, lvl)
			}
		case "protocols":
			if _, _, err := tlscert.ProtocolRange(strings.ReplaceAll(val, ":", " ")); err != nil {
				return err
			}
			p.protocols = strings.ReplaceAll(val, ":", " ")
		case "ciphers":
			if err := tlscert.CipherGrade(val); err != nil {
				return err
			}
		default:
			return fmt.Errorf("invalid attribute name: %q", name)
		}
	}
	return nil
}

// nexthopDomain is the domain of a next hop in transport(5) syntax:
// "example.com" of "example.com", "[example.com]:2525".
func nexthopDomain(dest string) string {
	h := dest
	if strings.HasPrefix(h, "[") {
		if i := strings.IndexByte(h, ']'); i > 0 {
			return strings.ToLower(h[1:i])
		}
	}
	if i := strings.LastIndexByte(h, ':'); i >= 0 {
		h = h[:i]
	}
	return strings.ToLower(strings.TrimSuffix(h, "."))
}

// TLSFromConfig reads the smtp_tls_* parameters.
func TLSFromConfig(c *config.Config) (*TLSSettings, error) {
	s := &TLSSettings{}
	bad := func(name string, err error) error {
		return &config.Error{File: whereFile(c, name), Param: name, Msg: err.Error()}
	}
	var err error
	if s.Roots, err = loadRoots(c.String("smtp_tls_CAfile"), c.String("smtp_tls_CApath")); err != nil {
		return nil, bad("smtp_tls_CAfile", err)
	}
	if cf := c.String("smtp_tls_cert_file"); cf != "" {
		kf := c.String("smtp_tls_key_file")
		if kf == "" {
			kf = cf
		}
		cert, err := tls.LoadX509KeyPair(cf, kf)
		if err != nil {
			return nil, bad("smtp_tls_cert_file", err)
		}
		s.Cert = &cert
	}
	lists := []struct {
		name string
		p    *[]string
	}{
		{"smtp_tls_verify_cert_match", &s.VerifyMatch},
		{"smtp_tls_secure_cert_match", &s.SecureMatch},
		{"smtp_tls_fingerprint_cert_match", &s.Fingerprints},
	}
	for _, l := range lists {
		if *l.p, err = c.List(l.name); err != nil {
			return nil, err
		}
	}
	s.Digest = strings.ToLower(c.String("smtp_tls_fingerprint_digest"))
	if _, ok := digests[s.Digest]; !ok {
		return nil, bad("smtp_tls_fingerprint_digest", fmt.Errorf("digest %q is not supported (md5, sha1, sha256, sha512)", s.Digest))
	}
	s.Protocols, s.MandatoryProtocols = c.String("smtp_tls_protocols"), c.String("smtp_tls_mandatory_protocols")
	for _, n := range []string{"smtp_tls_protocols", "smtp_tls_mandatory_protocols"} {
		if _, _, err := tlscert.ProtocolRange(c.String(n)); err != nil {
			return nil, bad(n, err)
		}
	}
	s.Ciphers, s.MandatoryCiphers = c.String("smtp_tls_ciphers"), c.String("smtp_tls_mandatory_ciphers")
	for _, n := range []string{"smtp_tls_ciphers", "smtp_tls_mandatory_ciphers"} {
		if err := tlscert.CipherGrade(c.String(n)); err != nil {
			return nil, bad(n, err)
		}
	}
	tab, err := c.Table("smtp_tls_policy_maps")
	if err != nil {
		return nil, err
	}
	if tab != nil {
		s.Policy = tab
	}
	s.DNSSEC = strings.EqualFold(c.String("smtp_dns_support_level"), "dnssec")
	if s.LogLevel, err = c.Int("smtp_tls_loglevel"); err != nil {
		return nil, err
	}
	return s, nil
}

// loadRoots reads the CA certificates of a PEM file and of the files of a
// directory; both empty = nil (the system's roots).
func loadRoots(file, dir string) (*x509.CertPool, error) {
	if file == "" && dir == "" {
		return nil, nil
	}
	pool := x509.NewCertPool()
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, err
		}
		if !pool.AppendCertsFromPEM(b) {
			return nil, fmt.Errorf("%s: no PEM certificate", file)
		}
	}
	if dir != "" {
		ents, err := os.ReadDir(dir)
		if err != nil {
			return nil, err
		}
		for _, e := range ents {
			if b, err := os.ReadFile(filepath.Join(dir, e.Name())); err == nil {
				pool.AppendCertsFromPEM(b)
			}
		}
	}
	return pool, nil
}

var (
	systemRootsOnce sync.Once
	systemRoots     *x509.CertPool
)

// roots are the CAs trusted: smtp_tls_CAfile/CApath, else the system's.
func (s *TLSSettings) roots() *x509.CertPool {
	if s.Roots != nil {
		return s.Roots
	}
	systemRootsOnce.Do(func() {
		systemRoots, _ = x509.SystemCertPool()
		if systemRoots == nil {
			systemRoots = x509.NewCertPool()
		}
	})
	return systemRoots
}

// clientConfig is the crypto/tls configuration of a STARTTLS handshake
// under p. Certificates are checked after the handshake (checkPeer),
// as Postfix does, so that the failure is worded and logged as Postfix's.
func (p *tlsPolicy) clientConfig(t target) *tls.Config {
	minV, maxV, err := tlscert.ProtocolRange(p.protocols)
	if err != nil {
		minV, maxV = tls.VersionTLS12, tls.VersionTLS13
	}
	cfg := &tls.Config{InsecureSkipVerify: true, MinVersion: minV, MaxVersion: maxV}
	// SNI: the host name, never an address (RFC 6066 sec 3).
	if t.Name != "" && (!t.Addr.IsValid() || t.Name != t.Addr.String()) && !strings.HasPrefix(t.Name, "/") {
		cfg.ServerName = t.Name
	}
	if c := p.s.Cert; c != nil {
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return c, nil }
	}
	return cfg
}

// daneInit finds the TLSA records of a dane or dane-only session (RFC
// 7672), as Postfix's dane_init: without DNSSEC lookups, with an
// insecure MX host name or without secure TLSA records, dane becomes may
// (unusable records: encrypt) and dane-only defers with 4.7.5. A failed
// TLSA lookup defers at both levels.
func (d *Scheduler) daneInit(ctx context.Context, t target, p *tlsPolicy) error {
	incompat := func(cantAuth bool, why string) error {
		if p.level == TLSDane {
			p.level = TLSMay
			if cantAuth {
				p.level = TLSEncrypt
			}
			return nil
		}
		return &sessionError{transient(t, "4.7.5", why)}
	}
	if t.Path != "" {
		d.log.Warn().Msgf("%s: the %q security level is invalid for delivery via unix-domain sockets", t.dest, p.level)
		return &sessionError{transient(t, "4.7.5", "client TLS configuration problem")}
	}
	if !p.s.DNSSEC || !t.cf.DNS || d.resolver == nil {
		d.log.Warn().Msgf("%s: %s configured with dnssec lookups disabled", t.dest, p.level)
		if p.level == TLSDaneOnly {
			return &sessionError{transient(t, "4.7.5", "client TLS configuration problem")}
		}
		p.level = TLSMay
		return nil
	}
	if t.viaMX && !t.mxSecure {
		return incompat(false, "non DNSSEC destination")
	}
	qname := fmt.Sprintf("_%d._tcp.%s", t.Port, t.Name)
	recs, secure, err := d.resolver.LookupTLSA(ctx, qname)
	switch {
	case err != nil && !dnsr.IsNotFound(err):
		return &sessionError{transient(t, "4.7.5", fmt.Sprintf("TLSA lookup error for %s:%d", t.Name, t.Port))}
	case err != nil || !secure:
		// No records, or records without the resolver's AD bit: not to
		// be trusted (RFC 7672 sec 2.1.1).
		return incompat(false, "no TLSA records found")
	}
	if p.tlsa = usableTLSA(recs); len(p.tlsa) == 0 {
		return incompat(true, "TLSA records unusable")
	}
	return nil
}
