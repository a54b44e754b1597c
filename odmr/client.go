package odmr

import (
	"context"
	"crypto/hmac"
	"crypto/md5"
	"crypto/tls"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/textproto"
	"slices"
	"strings"
	"time"
)

// ClientOptions configure Pull, the customer side of ODMR (holdfast
// atrn): connect to the provider, authenticate, ATRN, and after the
// turnaround hand the connection to the local SMTP server, which queues
// the mail as it queues any (fetchmail's ODMR mode works the same way).
type ClientOptions struct {
	// Addr is the provider, host:port (port 366 by default).
	Addr string
	// TLS, when set, starts the connection with TLS (the provider's
	// odmr_tls_wrappermode).
	TLS *tls.Config
	// User and Password are the SASL credentials: CRAM-MD5 when the
	// provider offers it, else PLAIN (over TLS, or when allowed).
	User, Password string
	// Domains to pull; none = every domain the login owns.
	Domains []string
	// Forward is the local SMTP server (the first smtpd_listen address).
	Forward string
	// HeloName is sent in EHLO.
	HeloName string
	// Timeout bounds each exchange before the turnaround (default 60s).
	Timeout time.Duration
	// AllowPlaintext permits PLAIN over an unencrypted connection.
	AllowPlaintext bool
}

// ErrNoMail is the provider's 453: nothing queued for the domains.
var ErrNoMail = errors.New("odmr: no mail")

// Pull runs one ODMR session. It returns ErrNoMail for 453 and an error
// with the provider's reply when it refuses.
func Pull(ctx context.Context, o ClientOptions) error {
	if o.Timeout <= 0 {
		o.Timeout = 60 * time.Second
	}
	if o.HeloName == "" {
		o.HeloName = "localhost"
	}
	addr := o.Addr
	if _, _, err := net.SplitHostPort(addr); err != nil {
		addr = net.JoinHostPort(addr, "366")
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("odmr: %w", err)
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Now()) })
	defer stop()
	if o.TLS != nil {
		tc := tls.Client(c, o.TLS)
		c.SetDeadline(time.Now().Add(o.Timeout))
		if err := tc.HandshakeContext(ctx); err != nil {
			return fmt.Errorf("odmr: TLS: %w", err)
		}
		c = tc
	}
	tp := textproto.NewConn(c)
	if err := o.negotiate(c, tp); err != nil {
		return err
	}
	c.SetDeadline(time.Time{})
	// The turnaround: the provider is now the client; the local server
	// speaks to it.
	local, err := d.DialContext(ctx, "tcp", o.Forward)
	if err != nil {
		return fmt.Errorf("odmr: local SMTP server %s: %w", o.Forward, err)
	}
	defer local.Close()
	return relay(c, tp, local)
}

// negotiate runs greeting, EHLO, AUTH and ATRN.
func (o *ClientOptions) negotiate(c net.Conn, tp *textproto.Conn) error {
	x := exchange{c: c, tp: tp, timeout: o.Timeout}
	if _, err := x.step("", 220); err != nil {
		return err
	}
	ehlo, err := x.step("EHLO "+o.HeloName, 250)
	if err != nil {
		return err
	}
	_, secure := c.(*tls.Conn)
	if err := o.authenticate(x, authMechs(ehlo), secure); err != nil {
		return err
	}
	cmd := "ATRN"
	if len(o.Domains) > 0 {
		cmd += " " + strings.Join(o.Domains, ",")
	}
	_, err = x.step(cmd, 250)
	var te *textproto.Error
	if errors.As(err, &te) && te.Code == 453 {
		x.step("QUIT", 221)
		return ErrNoMail
	}
	return err
}

// exchange is the client side of the negotiation: one command, one
// reply, each under the timeout.
type exchange struct {
	c       net.Conn
	tp      *textproto.Conn
	timeout time.Duration
}

// step sends cmd (none: read the greeting) and reads a reply with code
// want; the reply's text comes back with an error too.
func (x exchange) step(cmd string, want int) (string, error) {
	x.c.SetDeadline(time.Now().Add(x.timeout))
	if cmd != "" {
		if err := x.tp.PrintfLine("%s", cmd); err != nil {
			return "", fmt.Errorf("odmr: %w", err)
		}
	}
	_, msg, err := x.tp.ReadResponse(want)
	if err != nil {
		return msg, fmt.Errorf("odmr: %s: %w", strings.Fields(cmd + " greeting")[0], err)
	}
	return msg, nil
}

// authMechs is the list of the EHLO reply's AUTH line, upper case.
func authMechs(ehlo string) []string {
	var mechs []string
	for _, l := range strings.Split(ehlo, "\n") {
		if f := strings.Fields(strings.ToUpper(l)); len(f) > 0 && f[0] == "AUTH" {
			mechs = f[1:]
		}
	}
	return mechs
}

// authenticate logs in with CRAM-MD5 when offered, else with PLAIN over
// TLS (or in the clear when AllowPlaintext says so).
func (o *ClientOptions) authenticate(x exchange, mechs []string, secure bool) error {
	switch {
	case slices.Contains(mechs, "CRAM-MD5"):
		ch, err := x.step("AUTH CRAM-MD5", 334)
		if err != nil {
			return err
		}
		raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(ch))
		if err != nil {
			return fmt.Errorf("odmr: bad CRAM-MD5 challenge")
		}
		m := hmac.New(md5.New, []byte(o.Password))
		m.Write(raw)
		resp := base64.StdEncoding.EncodeToString([]byte(o.User + " " + hex.EncodeToString(m.Sum(nil))))
		_, err = x.step(resp, 235)
		return err
	case slices.Contains(mechs, "PLAIN") && (secure || o.AllowPlaintext):
		resp := base64.StdEncoding.EncodeToString([]byte("\x00" + o.User + "\x00" + o.Password))
		_, err := x.step("AUTH PLAIN "+resp, 235)
		return err
	default:
		return fmt.Errorf("odmr: no usable AUTH mechanism (offered: %s)", strings.Join(mechs, " "))
	}
}

// relay copies both ways until the local server ends the session (its
// reply to QUIT) or either side goes away. Bytes the provider sent with
// the 250 (none, by RFC 2645) are forwarded first.
func relay(remote net.Conn, tp *textproto.Conn, local net.Conn) error {
	errc := make(chan error, 2)
	go func() {
		_, err := io.Copy(local, tp.R)
		if cw, ok := local.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite()
		}
		errc <- err
	}()
	go func() {
		_, err := io.Copy(remote, local)
		remote.Close() // the local server hung up: the session is over
		errc <- err
	}()
	err := <-errc
	<-errc
	if err != nil && !errors.Is(err, net.ErrClosed) {
		return fmt.Errorf("odmr: transfer: %w", err)
	}
	return nil
}
