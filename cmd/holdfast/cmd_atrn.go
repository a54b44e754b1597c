package main

import (
	"bufio"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"time"

	"github.com/holdfast-mta/holdfast/odmr"
)

func init() {
	register("atrn", "pull this site's mail from an ODMR provider (RFC 2645 ATRN) into the local queue", runATRN)
}

const atrnUsage = "usage: holdfast atrn [-c FILE] [--tls] [--user NAME] [--password-file FILE] [--forward HOST:PORT] HOST[:PORT] [DOMAIN...]"

// runATRN is `holdfast atrn HOST[:PORT] DOMAIN...`: the customer side of
// ODMR, as Exim's -atrn. It authenticates to the provider, asks ATRN for
// the domains (none: every domain the login owns) and after the
// turnaround relays the connection to the local daemon's SMTP listener
// (the first smtpd_listen address, or --forward), which queues the mail
// as it queues any. Credentials come from --user and --password-file
// (its first line; "user:password" also sets the user), else from
// HOLDFAST_ATRN_USER and HOLDFAST_ATRN_PASSWORD.
func runATRN(args []string, stdout, stderr io.Writer) int {
	fs, cfg := commandFlags("holdfast atrn", stderr)
	useTLS := fs.Bool("tls", false, "start the connection with TLS (the provider's odmr_tls_wrappermode)")
	insecure := fs.Bool("tls-insecure", false, "with --tls, do not verify the provider's certificate")
	user := fs.String("user", os.Getenv("HOLDFAST_ATRN_USER"), "SASL login (default $HOLDFAST_ATRN_USER)")
	pwFile := fs.String("password-file", "", "read the password (or user:password) from the first line of `file` (default $HOLDFAST_ATRN_PASSWORD)")
	forward := fs.String("forward", "", "local SMTP server `host:port` (default: the first smtpd_listen address)")
	plain := fs.Bool("allow-plaintext", false, "allow AUTH PLAIN without TLS when the provider offers no CRAM-MD5")
	timeout := fs.Duration("timeout", 60*time.Second, "bound on each exchange before the turnaround")
	pos, err := parseMixed(fs, args)
	if err != nil {
		return exUsage
	}
	if len(pos) < 1 {
		fmt.Fprintln(stderr, atrnUsage)
		return exUsage
	}
	c, code := loadConfig(*cfg, stderr)
	if c == nil {
		return code
	}
	o := odmr.ClientOptions{Addr: pos[0], Domains: pos[1:], User: *user, Password: os.Getenv("HOLDFAST_ATRN_PASSWORD"),
		Forward: *forward, HeloName: c.String("myhostname"), Timeout: *timeout, AllowPlaintext: *plain}
	if *pwFile != "" {
		if o.User, o.Password, err = readPassword(*pwFile, o.User); err != nil {
			fmt.Fprintf(stderr, "holdfast atrn: %v\n", err)
			return exNoInput
		}
	}
	if o.User == "" || o.Password == "" {
		fmt.Fprintln(stderr, "holdfast atrn: no credentials (--user and --password-file, or HOLDFAST_ATRN_USER and HOLDFAST_ATRN_PASSWORD)")
		return exUsage
	}
	if o.Forward == "" {
		if o.Forward, err = localSMTP(c.String("smtpd_listen")); err != nil {
			fmt.Fprintf(stderr, "holdfast atrn: %v\n", err)
			return exConfig
		}
	}
	if *useTLS {
		host, _, err := net.SplitHostPort(o.Addr)
		if err != nil {
			host = o.Addr
		}
		o.TLS = &tls.Config{ServerName: host, InsecureSkipVerify: *insecure, MinVersion: tls.VersionTLS12}
	}
	ctx, cancel := interruptible()
	defer cancel()
	switch err := odmr.Pull(ctx, o); {
	case errors.Is(err, odmr.ErrNoMail):
		fmt.Fprintln(stdout, "no mail")
		return 0
	case err != nil:
		fmt.Fprintf(stderr, "holdfast atrn: %v\n", err)
		return exTempFail
	}
	return 0
}

func readPassword(path, user string) (string, string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", "", err
	}
	defer f.Close()
	line, err := bufio.NewReader(io.LimitReader(f, 4096)).ReadString('\n')
	if err != nil && err != io.EOF {
		return "", "", err
	}
	line = strings.TrimRight(line, "\r\n")
	if u, p, ok := strings.Cut(line, ":"); ok && user == "" {
		return u, p, nil
	}
	return user, line, nil
}

// localSMTP turns the first smtpd_listen address into one to dial.
func localSMTP(listen string) (string, error) {
	f := strings.FieldsFunc(listen, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' })
	if len(f) == 0 {
		return "", errors.New("smtpd_listen is empty; give --forward")
	}
	host, port, err := net.SplitHostPort(f[0])
	if err != nil {
		return "", fmt.Errorf("smtpd_listen %s: %w", f[0], err)
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port), nil
}
