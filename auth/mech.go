package auth

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"time"

	gosasl "github.com/emersion/go-sasl"
)

// The mechanisms run by holdfast itself (for PasswdFile): PLAIN (RFC 4616,
// go-sasl's server), LOGIN (draft-murchison-sasl-login) and CRAM-MD5 (RFC
// 2195). Each exchange accepts at most maxSteps client responses.

const maxSteps = 4

// decode64 decodes one client response ("=" is RFC 4954's empty initial
// response).
func decode64(s string, initial bool) ([]byte, error) {
	if initial && s == "=" {
		return []byte{}, nil
	}
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil, ErrMalformed
	}
	return b, nil
}

// plainExchange wraps go-sasl's PLAIN server.
type plainExchange struct {
	srv   gosasl.Server
	login string
	steps int
}

func newPlain(verify func(login, password string) bool) *plainExchange {
	x := &plainExchange{}
	x.srv = gosasl.NewPlainServer(func(identity, username, password string) error {
		// RFC 4616 sec 2: an authorization identity other than the
		// login would mean acting for someone else; refused.
		if identity != "" && identity != username {
			return failed()
		}
		if !verify(username, password) {
			return failed()
		}
		x.login = username
		return nil
	})
	return x
}

func (x *plainExchange) Step(resp string, initial bool) (string, bool, error) {
	if x.steps++; x.steps > maxSteps {
		return "", false, failed()
	}
	var in []byte
	if !initial || resp != "" {
		b, err := decode64(resp, initial)
		if err != nil {
			return "", false, err
		}
		in = b
	}
	ch, done, err := x.srv.Next(in)
	if err != nil {
		if _, ok := err.(*Failure); ok {
			return "", false, err
		}
		return "", false, &Failure{Reason: reasonFailed}
	}
	if done {
		return "", true, nil
	}
	return base64.StdEncoding.EncodeToString(ch), false, nil
}

func (x *plainExchange) Login() string { return x.login }
func (x *plainExchange) Close() error  { return nil }

// loginExchange: challenges "Username:" and "Password:"; the user name
// may come as the initial response.
type loginExchange struct {
	verify   func(login, password string) bool
	user     []byte
	haveUser bool
	login    string
	steps    int
}

var (
	challengeUser = base64.StdEncoding.EncodeToString([]byte("Username:"))
	challengePass = base64.StdEncoding.EncodeToString([]byte("Password:"))
)

func (x *loginExchange) Step(resp string, initial bool) (string, bool, error) {
	if x.steps++; x.steps > maxSteps {
		return "", false, failed()
	}
	if initial && resp == "" {
		return challengeUser, false, nil
	}
	b, err := decode64(resp, initial)
	if err != nil {
		return "", false, err
	}
	if !x.haveUser {
		x.user, x.haveUser = b, true
		return challengePass, false, nil
	}
	if !x.verify(string(x.user), string(b)) {
		return "", false, failed()
	}
	x.login = string(x.user)
	return "", true, nil
}

func (x *loginExchange) Login() string { return x.login }
func (x *loginExchange) Close() error  { return nil }

// cramExchange: RFC 2195. The challenge is a msg-id-like string with a
// random part, the time and the host name (sec 2).
type cramExchange struct {
	challenge []byte
	check     func(login string, challenge, digest []byte) bool
	sent      bool
	login     string
	steps     int
}

func newCRAM(hostname string, now time.Time, check func(string, []byte, []byte) bool) *cramExchange {
	var r [8]byte
	rand.Read(r[:])
	ch := fmt.Sprintf("<%d.%d@%s>", binary.BigEndian.Uint64(r[:])>>1, now.Unix(), hostname)
	return &cramExchange{challenge: []byte(ch), check: check}
}

func (x *cramExchange) Step(resp string, initial bool) (string, bool, error) {
	if x.steps++; x.steps > maxSteps {
		return "", false, failed()
	}
	if !x.sent {
		if initial && resp != "" {
			// RFC 2195 has no initial response.
			return "", false, &Failure{Reason: "Invalid initial response"}
		}
		x.sent = true
		return base64.StdEncoding.EncodeToString(x.challenge), false, nil
	}
	b, err := decode64(resp, false)
	if err != nil {
		return "", false, err
	}
	// "user SP digest": the digest is the last word (sec 2).
	i := bytes.LastIndexByte(b, ' ')
	if i <= 0 {
		return "", false, failed()
	}
	user, digest := string(b[:i]), b[i+1:]
	if !x.check(user, x.challenge, digest) {
		return "", false, failed()
	}
	x.login = user
	return "", true, nil
}

func (x *cramExchange) Login() string { return x.login }
func (x *cramExchange) Close() error  { return nil }
