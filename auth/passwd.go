package auth

import (
	"bufio"
	"crypto/hmac"
	"crypto/md5"
	"crypto/subtle"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// PasswdFile is the passwd-file back-end: Dovecot's passwd-file format,
// one "login:{SCHEME}secret[:uid:gid:gecos:home:shell:extra]" per line;
// empty lines and lines starting with '#' are skipped. Schemes: {PLAIN}
// (also {CLEARTEXT}), {BLF-CRYPT} (bcrypt), {SHA512-CRYPT},
// {SHA256-CRYPT}, {CRAM-MD5} (Dovecot's HMAC-MD5 context, from `doveadm
// pw -s CRAM-MD5`) and {CRYPT}, the default without a scheme, for "$2y$",
// "$6$" or "$5$" crypt strings.
//
// CRAM-MD5 needs the secret or its HMAC context, so it works only for
// {PLAIN} and {CRAM-MD5} entries; it is offered when at least one entry
// has one. The file is read again when its size, time or inode change.
type PasswdFile struct {
	path string
	// Hostname goes into CRAM-MD5 challenges.
	Hostname string

	mu      sync.Mutex
	stamp   fileStamp
	entries map[string]entry
	cram    bool // some entry can do CRAM-MD5
	now     func() time.Time
}

type fileStamp struct {
	size  int64
	mtime time.Time
	ino   uint64
}

type entry struct {
	scheme string // upper case, "CRYPT" when absent
	secret string
}

// OpenPasswdFile reads the file once, so a missing or malformed file is a
// start-up error.
func OpenPasswdFile(path, hostname string) (*PasswdFile, error) {
	p := &PasswdFile{path: path, Hostname: hostname, now: time.Now}
	if err := p.reload(); err != nil {
		return nil, err
	}
	return p, nil
}

// reload reads the file again if it changed. On a read error the
// previous contents stay in use and the error is returned.
func (p *PasswdFile) reload() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	st, err := statFile(p.path)
	if err != nil {
		return fmt.Errorf("auth: passwd-file: %w", err)
	}
	if p.entries != nil && st == p.stamp {
		return nil
	}
	entries, cram, err := readPasswd(p.path)
	if err != nil {
		return err
	}
	p.entries, p.cram, p.stamp = entries, cram, st
	return nil
}

// maxPasswdLine bounds one line of the file.
const maxPasswdLine = 64 * 1024

func readPasswd(path string) (map[string]entry, bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, false, fmt.Errorf("auth: passwd-file: %w", err)
	}
	defer f.Close()
	entries := make(map[string]entry)
	cram := false
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 4096), maxPasswdLine)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimRight(sc.Text(), "\r")
		if strings.TrimSpace(line) == "" || strings.HasPrefix(line, "#") {
			continue
		}
		login, rest, ok := strings.Cut(line, ":")
		if !ok || login == "" {
			return nil, false, fmt.Errorf("auth: passwd-file %s:%d: want login:password", path, n)
		}
		secret, _, _ := strings.Cut(rest, ":")
		e := entry{scheme: "CRYPT", secret: secret}
		if strings.HasPrefix(secret, "{") {
			if i := strings.IndexByte(secret, '}'); i > 0 {
				e.scheme, e.secret = strings.ToUpper(secret[1:i]), secret[i+1:]
			}
		}
		switch e.scheme {
		case "PLAIN", "CLEARTEXT":
			e.scheme = "PLAIN"
			cram = true
		case "CRAM-MD5":
			if b, err := hex.DecodeString(e.secret); err != nil || len(b) != 32 {
				return nil, false, fmt.Errorf("auth: passwd-file %s:%d: bad {CRAM-MD5} secret", path, n)
			}
			cram = true
		case "BLF-CRYPT", "SHA512-CRYPT", "SHA256-CRYPT", "CRYPT":
		default:
			return nil, false, fmt.Errorf("auth: passwd-file %s:%d: unsupported scheme {%s}", path, n, e.scheme)
		}
		entries[login] = e
	}
	if err := sc.Err(); err != nil {
		return nil, false, fmt.Errorf("auth: passwd-file %s: %w", path, err)
	}
	return entries, cram, nil
}

func (p *PasswdFile) lookup(login string) (entry, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	e, ok := p.entries[login]
	return e, ok
}

// Mechanisms implements Backend.
func (p *PasswdFile) Mechanisms() ([]Mech, error) {
	if err := p.reload(); err != nil {
		return nil, err
	}
	m := []Mech{{Name: "PLAIN", Plaintext: true}, {Name: "LOGIN", Plaintext: true}}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cram {
		m = append(m, Mech{Name: "CRAM-MD5", Dictionary: true, Active: true})
	}
	return m, nil
}

// Start implements Backend.
func (p *PasswdFile) Start(mech string, _ Info) (Exchange, error) {
	if err := p.reload(); err != nil {
		return nil, &Failure{Reason: "Can't read authentication database", Temp: true}
	}
	switch strings.ToUpper(mech) {
	case "PLAIN":
		return newPlain(p.verify), nil
	case "LOGIN":
		return &loginExchange{verify: p.verify}, nil
	case "CRAM-MD5":
		return newCRAM(p.Hostname, p.now(), p.cramCheck), nil
	}
	return nil, ErrNoMech
}

// verify checks a plaintext password.
func (p *PasswdFile) verify(login, password string) bool {
	e, ok := p.lookup(login)
	if !ok {
		return false
	}
	switch e.scheme {
	case "PLAIN":
		return subtle.ConstantTimeCompare([]byte(e.secret), []byte(password)) == 1
	case "CRAM-MD5":
		return subtle.ConstantTimeCompare(cramContext(password), mustHex(e.secret)) == 1
	case "BLF-CRYPT":
		return bcrypt.CompareHashAndPassword([]byte(e.secret), []byte(password)) == nil
	case "SHA512-CRYPT", "SHA256-CRYPT":
		return shaCryptVerify(password, e.secret)
	case "CRYPT":
		if strings.HasPrefix(e.secret, "$2") {
			return bcrypt.CompareHashAndPassword([]byte(e.secret), []byte(password)) == nil
		}
		return shaCryptVerify(password, e.secret)
	}
	return false
}

// cramCheck checks a CRAM-MD5 digest (hex) of challenge.
func (p *PasswdFile) cramCheck(login string, challenge, digest []byte) bool {
	e, ok := p.lookup(login)
	if !ok {
		return false
	}
	var want []byte
	switch e.scheme {
	case "PLAIN":
		m := hmac.New(md5.New, []byte(e.secret))
		m.Write(challenge)
		want = m.Sum(nil)
	case "CRAM-MD5":
		want = hmacFromContext(mustHex(e.secret), challenge)
	default:
		return false
	}
	got := make([]byte, hex.DecodedLen(len(digest)))
	if n, err := hex.Decode(got, digest); err != nil || n != len(want) {
		return false
	}
	return subtle.ConstantTimeCompare(got, want) == 1
}

func mustHex(s string) []byte {
	b, _ := hex.DecodeString(s)
	return b
}

// cramContext is Dovecot's {CRAM-MD5} secret of a password: the MD5
// states after the outer and the inner HMAC pad blocks, each as four
// little-endian words (Dovecot's hmac_md5_get_cram_context).
func cramContext(password string) []byte {
	key := []byte(password)
	if len(key) > 64 {
		s := md5.Sum(key)
		key = s[:]
	}
	var out []byte
	for _, pad := range []byte{0x5c, 0x36} {
		block := make([]byte, 64)
		copy(block, key)
		for i := range block {
			block[i] ^= pad
		}
		h := md5.New()
		h.Write(block)
		st, _ := h.(interface{ MarshalBinary() ([]byte, error) }).MarshalBinary()
		for i := range 4 {
			out = binary.LittleEndian.AppendUint32(out, binary.BigEndian.Uint32(st[4+4*i:]))
		}
	}
	return out
}

// hmacFromContext computes HMAC-MD5(challenge) from a cramContext.
func hmacFromContext(ctx, challenge []byte) []byte {
	resume := func(words []byte) interface {
		Write([]byte) (int, error)
		Sum([]byte) []byte
	} {
		st := []byte("md5\x01")
		for i := range 4 {
			st = binary.BigEndian.AppendUint32(st, binary.LittleEndian.Uint32(words[4*i:]))
		}
		st = append(st, make([]byte, 64)...)
		st = binary.BigEndian.AppendUint64(st, 64)
		h := md5.New()
		h.(interface{ UnmarshalBinary([]byte) error }).UnmarshalBinary(st)
		return h
	}
	inner := resume(ctx[16:32])
	inner.Write(challenge)
	outer := resume(ctx[0:16])
	outer.Write(inner.Sum(nil))
	return outer.Sum(nil)
}
