// Package auth checks SMTP AUTH credentials (RFC 4954) for smtpd and the
// ODMR provider. A Backend is chosen by Postfix's smtpd_sasl_type:
//
//   - "passwd-file": Dovecot's passwd-file format read by holdfast itself
//     (PasswdFile), with the PLAIN, LOGIN and CRAM-MD5 mechanisms;
//   - "dovecot": Dovecot's authentication protocol over its Unix socket
//     (Dovecot), as Postfix's xsasl_dovecot_server.c speaks it; Dovecot
//     runs the mechanisms.
//
// Both work on the base64 strings of the SMTP dialogue, so smtpd passes
// the client's lines through without decoding them.
package auth

import (
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"
)

// Open opens the back-end named by smtpd_sasl_type ("dovecot" or
// "passwd-file") with smtpd_sasl_path; hostname goes into CRAM-MD5
// challenges. A relative Dovecot socket path is taken relative to dir
// ($queue_directory), as Postfix's "private/auth" is.
func Open(typ, path, dir, hostname string) (Backend, error) {
	switch typ {
	case "dovecot":
		if !filepath.IsAbs(path) {
			path = filepath.Join(dir, path)
		}
		return NewDovecot(path), nil
	case "passwd-file":
		p, err := OpenPasswdFile(path, hostname)
		if err != nil {
			return nil, fmt.Errorf("smtpd_sasl_path: %w", err)
		}
		return p, nil
	}
	return nil, fmt.Errorf("smtpd_sasl_type: %q is not supported (use dovecot or passwd-file)", typ)
}

// Mech is a SASL mechanism with its security properties (the flags of
// Dovecot's MECH line and of Postfix's smtpd_sasl_security_options).
type Mech struct {
	Name string
	// Plaintext: the password crosses the wire (PLAIN, LOGIN).
	Plaintext bool
	// Anonymous: no credentials at all (ANONYMOUS).
	Anonymous bool
	// Dictionary: open to passive dictionary attacks (CRAM-MD5).
	Dictionary bool
	// Active: open to active (non-dictionary) attacks.
	Active bool
	// ForwardSecrecy, MutualAuth: the mechanism provides them.
	ForwardSecrecy bool
	MutualAuth     bool
}

// Security is a parsed smtpd_sasl_security_options value: which
// mechanisms may be offered.
type Security struct {
	NoPlaintext, NoActive, NoDictionary, NoAnonymous bool
	ForwardSecrecy, MutualAuth                       bool
}

// ParseSecurity parses smtpd_sasl_security_options (Postfix's names:
// noplaintext, noactive, nodictionary, noanonymous, forward_secrecy,
// mutual_auth). An unknown word is an error.
func ParseSecurity(words []string) (Security, error) {
	var s Security
	options := map[string]*bool{
		"noplaintext": &s.NoPlaintext, "noactive": &s.NoActive, "nodictionary": &s.NoDictionary,
		"noanonymous": &s.NoAnonymous, "forward_secrecy": &s.ForwardSecrecy, "mutual_auth": &s.MutualAuth,
	}
	for _, w := range words {
		lw := strings.ToLower(strings.TrimSpace(w))
		if lw == "" {
			continue
		}
		opt, ok := options[lw]
		if !ok {
			return Security{}, fmt.Errorf("unknown SASL security option %q", w)
		}
		*opt = true
	}
	return s, nil
}

// Allows reports whether the options allow mechanism m.
func (s Security) Allows(m Mech) bool {
	switch {
	case s.NoPlaintext && m.Plaintext, s.NoActive && m.Active,
		s.NoDictionary && m.Dictionary, s.NoAnonymous && m.Anonymous,
		s.ForwardSecrecy && !m.ForwardSecrecy, s.MutualAuth && !m.MutualAuth:
		return false
	}
	return true
}

// Info describes the connection being authenticated (Dovecot's AUTH
// fields).
type Info struct {
	Service string     // "smtp"
	Local   netip.Addr // lip
	Remote  netip.Addr // rip
	Secured bool       // TLS is on
}

// Backend is a credential back-end.
type Backend interface {
	// Mechanisms lists the mechanisms the back-end offers.
	Mechanisms() ([]Mech, error)
	// Start begins an exchange for mechanism mech (upper case).
	Start(mech string, info Info) (Exchange, error)
}

// Exchange is one authentication in progress.
type Exchange interface {
	// Step takes the client's base64 response; initial is false for the
	// AUTH command without an initial response (resp is then ""). It
	// returns the next base64 challenge, or done with the login. A
	// *Failure error ends the exchange; ErrMalformed means the client's
	// response is not base64.
	Step(resp string, initial bool) (challenge string, done bool, err error)
	// Login is the authenticated name once Step reported done.
	Login() string
	// Close releases the exchange (an abandoned one too).
	Close() error
}

// Failure is a refused authentication: Temp for a back-end that cannot
// answer now (454), otherwise wrong credentials (535).
type Failure struct {
	Reason string
	Temp   bool
}

func (f *Failure) Error() string { return f.Reason }

// ErrMalformed: the client's response is not valid base64 (RFC 4954 sec
// 4: 501).
var ErrMalformed = errors.New("auth: malformed base64 response")

// ErrNoMech: the back-end does not offer the mechanism.
var ErrNoMech = errors.New("auth: unsupported mechanism")

// reasonFailed is the reason given for wrong credentials (Cyrus SASL's
// text for SASL_BADAUTH, which Postfix passes through).
const reasonFailed = "authentication failure"

func failed() error { return &Failure{Reason: reasonFailed} }

// validBase64 reports whether s holds only base64 characters (the check
// xsasl_dovecot_server.c makes before passing client data on: a TAB or
// line end would break the Dovecot protocol).
func validBase64(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '+' || c == '/' || c == '=') {
			return false
		}
	}
	return true
}
