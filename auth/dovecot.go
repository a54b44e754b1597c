package auth

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/holdfast-mta/holdfast/internal/printable"
)

// Dovecot is the dovecot back-end: Dovecot's authentication protocol
// (version 1) over the auth-client Unix socket, the client side as
// Postfix's xsasl_dovecot_server.c speaks it:
//
//	-> VERSION 1 2, CPID pid
//	<- VERSION 1 x, MECH name flags..., SPID, CUID, COOKIE, DONE
//	-> AUTH id mech service=smtp nologin lip= rip= [secured] [resp=]
//	<- OK id user=... | CONT id challenge | FAIL id [reason=] [temp]
//	-> CONT id response
//
// Each exchange uses its own connection, so concurrent sessions never
// share request state; the mechanism list is cached for a minute.
type Dovecot struct {
	path string
	// Timeout bounds each round trip with Dovecot (its own failure delay,
	// auth_failure_delay, is 2s by default).
	Timeout time.Duration

	mu      sync.Mutex
	mechs   []Mech
	fetched time.Time
}

// NewDovecot returns the back-end for the socket at path.
func NewDovecot(path string) *Dovecot {
	return &Dovecot{path: path, Timeout: 30 * time.Second}
}

const (
	dovecotMaxLine  = 16 * 1024 // one protocol line
	dovecotMaxLines = 1000      // handshake lines before DONE
	mechCacheTime   = time.Minute
)

var errDovecotProto = errors.New("auth: dovecot: protocol error")

type dovecotConn struct {
	c       net.Conn
	r       *bufio.Reader
	timeout time.Duration
}

// dial connects and runs the handshake, returning the mechanisms.
func (d *Dovecot) dial() (*dovecotConn, []Mech, error) {
	c, err := net.DialTimeout("unix", d.path, d.Timeout)
	if err != nil {
		return nil, nil, fmt.Errorf("auth: dovecot: %w", err)
	}
	dc := &dovecotConn{c: c, r: bufio.NewReaderSize(c, 4096), timeout: d.Timeout}
	if err := dc.write(fmt.Sprintf("VERSION\t1\t2\nCPID\t%d\n", os.Getpid())); err != nil {
		c.Close()
		return nil, nil, err
	}
	var mechs []Mech
	haveMech := false
	for range dovecotMaxLines {
		f, err := dc.read()
		if err != nil {
			c.Close()
			return nil, nil, err
		}
		switch f[0] {
		case "VERSION":
			if len(f) < 3 || f[1] != "1" {
				c.Close()
				return nil, nil, fmt.Errorf("auth: dovecot: protocol version mismatch (%s)", strings.Join(f[1:], "."))
			}
		case "MECH":
			haveMech = true
			if m, ok := parseMech(f[1:]); ok {
				mechs = append(mechs, m)
			}
		case "SPID":
			if !haveMech {
				c.Close()
				return nil, nil, errors.New("auth: dovecot: connected to the wrong socket (auth-master instead of auth-client)")
			}
		case "DONE":
			return dc, mechs, nil
		}
	}
	c.Close()
	return nil, nil, errDovecotProto
}

// parseMech reads "name flag...". Private mechanisms are not offered.
func parseMech(f []string) (Mech, bool) {
	if len(f) == 0 || f[0] == "" {
		return Mech{}, false
	}
	m := Mech{Name: strings.ToUpper(f[0])}
	flags := map[string]*bool{
		"plaintext": &m.Plaintext, "anonymous": &m.Anonymous, "dictionary": &m.Dictionary,
		"active": &m.Active, "forward-secrecy": &m.ForwardSecrecy, "mutual-auth": &m.MutualAuth,
	}
	for _, fl := range f[1:] {
		fl = strings.ToLower(fl)
		if fl == "private" {
			return Mech{}, false
		}
		if p, ok := flags[fl]; ok {
			*p = true
		}
	}
	return m, true
}

func (dc *dovecotConn) write(s string) error {
	dc.c.SetWriteDeadline(time.Now().Add(dc.timeout))
	if _, err := io.WriteString(dc.c, s); err != nil {
		return fmt.Errorf("auth: dovecot: %w", err)
	}
	return nil
}

// read reads one line, split at TABs; a line longer than dovecotMaxLine
// is a protocol error.
func (dc *dovecotConn) read() ([]string, error) {
	dc.c.SetReadDeadline(time.Now().Add(dc.timeout))
	line, err := dc.r.ReadSlice('\n')
	if err == bufio.ErrBufferFull || len(line) > dovecotMaxLine {
		return nil, errDovecotProto
	}
	if err != nil {
		return nil, fmt.Errorf("auth: dovecot: %w", err)
	}
	return strings.Split(strings.TrimRight(string(line), "\r\n"), "\t"), nil
}

// Mechanisms implements Backend.
func (d *Dovecot) Mechanisms() ([]Mech, error) {
	d.mu.Lock()
	if d.mechs != nil && time.Since(d.fetched) < mechCacheTime {
		m := d.mechs
		d.mu.Unlock()
		return m, nil
	}
	d.mu.Unlock()
	dc, mechs, err := d.dial()
	if err != nil {
		return nil, err
	}
	dc.c.Close()
	d.mu.Lock()
	d.mechs, d.fetched = mechs, time.Now()
	d.mu.Unlock()
	return mechs, nil
}

// Start implements Backend. The connection is opened by the first Step.
func (d *Dovecot) Start(mech string, info Info) (Exchange, error) {
	mechs, err := d.Mechanisms()
	if err != nil {
		return nil, &Failure{Reason: "Can't connect to authentication server", Temp: true}
	}
	for _, m := range mechs {
		if strings.EqualFold(m.Name, mech) {
			return &dovecotExchange{d: d, mech: m.Name, info: info}, nil
		}
	}
	return nil, ErrNoMech
}

type dovecotExchange struct {
	d     *Dovecot
	mech  string
	info  Info
	conn  *dovecotConn
	login string
	steps int
}

// dovecotMaxSteps bounds the round trips of one exchange.
const dovecotMaxSteps = 16

func (x *dovecotExchange) Step(resp string, initial bool) (string, bool, error) {
	if !validBase64(resp) {
		return "", false, ErrMalformed
	}
	if x.steps++; x.steps > dovecotMaxSteps {
		return "", false, failed()
	}
	if x.conn == nil {
		if !initial {
			return "", false, errDovecotProto
		}
		dc, _, err := x.d.dial()
		if err != nil {
			return "", false, &Failure{Reason: "Can't connect to authentication server", Temp: true}
		}
		x.conn = dc
		req := "AUTH\t1\t" + x.mech + "\tservice=" + x.info.service() + "\tnologin"
		if x.info.Local.IsValid() {
			req += "\tlip=" + x.info.Local.String()
		}
		if x.info.Remote.IsValid() {
			req += "\trip=" + x.info.Remote.String()
		}
		if x.info.Secured {
			req += "\tsecured"
		}
		if resp != "" {
			if resp == "=" { // RFC 4954: empty initial response
				resp = ""
			}
			req += "\tresp=" + resp
		}
		if err := x.conn.write(req + "\n"); err != nil {
			return "", false, &Failure{Reason: "Connection lost to authentication server", Temp: true}
		}
	} else if err := x.conn.write("CONT\t1\t" + resp + "\n"); err != nil {
		return "", false, &Failure{Reason: "Connection lost to authentication server", Temp: true}
	}
	return x.reply()
}

// reply reads Dovecot's answer to request 1; other lines are skipped.
func (x *dovecotExchange) reply() (string, bool, error) {
	for range dovecotMaxLines {
		f, err := x.conn.read()
		if err != nil {
			return "", false, &Failure{Reason: "Connection lost to authentication server", Temp: true}
		}
		if len(f) < 2 || f[1] != "1" {
			continue
		}
		switch f[0] {
		case "OK":
			user, _, _ := dovecotArgs(f[2:])
			if user == "" {
				return "", false, &Failure{Reason: "Authentication backend error"}
			}
			x.login = user
			return "", true, nil
		case "CONT":
			if len(f) < 3 {
				return "", false, &Failure{Reason: "Authentication backend error"}
			}
			return f[2], false, nil
		case "FAIL":
			_, reason, temp := dovecotArgs(f[2:])
			if reason == "" {
				reason = reasonFailed
			}
			return "", false, &Failure{Reason: reason, Temp: temp}
		}
	}
	return "", false, &Failure{Reason: "Authentication backend error"}
}

// dovecotArgs reads the user=, reason= and temp fields of OK and FAIL.
func dovecotArgs(f []string) (user, reason string, temp bool) {
	for _, a := range f {
		switch {
		case strings.HasPrefix(a, "user="):
			user = printable.String(a[5:])
		case strings.HasPrefix(a, "reason="):
			reason = printable.String(a[7:])
		case a == "temp":
			temp = true
		}
	}
	return user, reason, temp
}

func (x *dovecotExchange) Login() string { return x.login }

func (x *dovecotExchange) Close() error {
	if x.conn != nil {
		x.conn.c.Close()
		x.conn = nil
	}
	return nil
}

func (i Info) service() string {
	if i.Service == "" {
		return "smtp"
	}
	return i.Service
}
