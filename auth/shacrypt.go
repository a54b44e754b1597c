package auth

import (
	"crypto/sha256"
	"crypto/sha512"
	"crypto/subtle"
	"hash"
	"strconv"
	"strings"
)

// SHA-crypt ($5$ and $6$, Ulrich Drepper's "Unix crypt using SHA-256 and
// SHA-512", the scheme of glibc's crypt(3) and Dovecot's SHA256-CRYPT and
// SHA512-CRYPT). golang.org/x/crypto has no implementation; the spec is
// short and its test vectors are checked in shacrypt_test.go.

const (
	shaRoundsDefault = 5000
	shaRoundsMin     = 1000
	shaRoundsMax     = 999999999
	shaSaltMax       = 16
	cryptAlphabet    = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
)

// Byte orders of the final encoding (spec steps 22 e and f).
var (
	sha256Order = [][3]int{{0, 10, 20}, {21, 1, 11}, {12, 22, 2}, {3, 13, 23}, {24, 4, 14}, {15, 25, 5}, {6, 16, 26}, {27, 7, 17}, {18, 28, 8}, {9, 19, 29}}
	sha512Order = [][3]int{{0, 21, 42}, {22, 43, 1}, {44, 2, 23}, {3, 24, 45}, {25, 46, 4}, {47, 5, 26}, {6, 27, 48}, {28, 49, 7}, {50, 8, 29}, {9, 30, 51}, {31, 52, 10}, {53, 11, 32}, {12, 33, 54}, {34, 55, 13}, {56, 14, 35}, {15, 36, 57}, {37, 58, 16}, {59, 17, 38}, {18, 39, 60}, {40, 61, 19}, {62, 20, 41}}
)

// shaCrypt computes the crypt string of password for setting, a string
// "$5$[rounds=N$]salt[$...]" or "$6$...". ok is false for a malformed
// setting.
func shaCrypt(password, setting string) (string, bool) {
	var newHash func() hash.Hash
	var order [][3]int
	var prefix string
	switch {
	case strings.HasPrefix(setting, "$5$"):
		newHash, order, prefix = sha256.New, sha256Order, "$5$"
	case strings.HasPrefix(setting, "$6$"):
		newHash, order, prefix = sha512.New, sha512Order, "$6$"
	default:
		return "", false
	}
	rest := setting[3:]
	rounds, explicit := shaRoundsDefault, false
	if r, ok := strings.CutPrefix(rest, "rounds="); ok {
		n, after, found := strings.Cut(r, "$")
		v, err := strconv.ParseUint(n, 10, 64)
		if !found || err != nil {
			return "", false
		}
		rounds = int(min(max(v, shaRoundsMin), shaRoundsMax))
		explicit, rest = true, after
	}
	salt, _, _ := strings.Cut(rest, "$")
	if len(salt) > shaSaltMax {
		salt = salt[:shaSaltMax]
	}
	sum := shaCryptSum(newHash, []byte(password), []byte(salt), rounds)
	var b strings.Builder
	b.WriteString(prefix)
	if explicit {
		b.WriteString("rounds=" + strconv.Itoa(rounds) + "$")
	}
	b.WriteString(salt)
	b.WriteByte('$')
	for _, o := range order {
		cryptB64(&b, uint(sum[o[0]])<<16|uint(sum[o[1]])<<8|uint(sum[o[2]]), 4)
	}
	if len(sum) == 32 {
		cryptB64(&b, uint(sum[31])<<8|uint(sum[30]), 3)
	} else {
		cryptB64(&b, uint(sum[63]), 2)
	}
	return b.String(), true
}

// shaCryptSum is steps 1-21 of the spec.
func shaCryptSum(newHash func() hash.Hash, p, s []byte, rounds int) []byte {
	h := newHash()
	h.Write(p)
	h.Write(s)
	h.Write(p)
	altSum := h.Sum(nil) // B
	n := len(altSum)

	h = newHash()
	h.Write(p)
	h.Write(s)
	writeRepeated(h, altSum, len(p))
	for l := len(p); l > 0; l >>= 1 {
		if l&1 != 0 {
			h.Write(altSum)
		} else {
			h.Write(p)
		}
	}
	sum := h.Sum(nil) // A

	h = newHash()
	for range len(p) {
		h.Write(p)
	}
	pBytes := repeatTo(h.Sum(nil), len(p)) // P

	h = newHash()
	for range 16 + int(sum[0]) {
		h.Write(s)
	}
	sBytes := repeatTo(h.Sum(nil), len(s)) // S

	for i := range rounds {
		h = newHash()
		if i&1 != 0 {
			h.Write(pBytes)
		} else {
			h.Write(sum[:n])
		}
		if i%3 != 0 {
			h.Write(sBytes)
		}
		if i%7 != 0 {
			h.Write(pBytes)
		}
		if i&1 != 0 {
			h.Write(sum[:n])
		} else {
			h.Write(pBytes)
		}
		sum = h.Sum(sum[:0])
	}
	return sum
}

func writeRepeated(h hash.Hash, b []byte, n int) {
	for ; n > len(b); n -= len(b) {
		h.Write(b)
	}
	h.Write(b[:n])
}

func repeatTo(b []byte, n int) []byte {
	out := make([]byte, 0, n)
	for len(out) < n {
		out = append(out, b[:min(len(b), n-len(out))]...)
	}
	return out
}

func cryptB64(b *strings.Builder, w uint, n int) {
	for range n {
		b.WriteByte(cryptAlphabet[w&0x3f])
		w >>= 6
	}
}

// shaCryptVerify reports whether password matches the crypt string.
func shaCryptVerify(password, crypted string) bool {
	got, ok := shaCrypt(password, crypted)
	return ok && subtle.ConstantTimeCompare([]byte(got), []byte(crypted)) == 1
}
