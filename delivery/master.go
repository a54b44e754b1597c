package delivery

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/holdfast-mta/holdfast/config"
)

// clientParams names the parameters of an SMTP or LMTP client, by field:
// the smtp(8) name and the lmtp(8) name ("" = none for that protocol).
var clientParams = []struct {
	field      string
	smtp, lmtp string
}{
	{"helo", "smtp_helo_name", "lmtp_lhlo_name"},
	{"tls", "smtp_tls_security_level", "lmtp_tls_security_level"},
	{"lookup", "smtp_host_lookup", "lmtp_host_lookup"},
	{"nodns", "disable_dns_lookups", "disable_dns_lookups"},
	{"mxlimit", "smtp_mx_address_limit", ""},
	{"port", "", "lmtp_tcp_port"},
	{"bind", "smtp_bind_address", ""},
	{"bind6", "smtp_bind_address6", ""},
	{"connect", "smtp_connect_timeout", "lmtp_connect_timeout"},
	{"hello", "smtp_helo_timeout", "lmtp_lhlo_timeout"},
	{"starttls", "smtp_starttls_timeout", "lmtp_starttls_timeout"},
	{"mail", "smtp_mail_timeout", "lmtp_mail_timeout"},
	{"rcpt", "smtp_rcpt_timeout", "lmtp_rcpt_timeout"},
	{"data_init", "smtp_data_init_timeout", "lmtp_data_init_timeout"},
	{"data_xfer", "smtp_data_xfer_timeout", "lmtp_data_xfer_timeout"},
	{"data_done", "smtp_data_done_timeout", "lmtp_data_done_timeout"},
	{"quit", "smtp_quit_timeout", "lmtp_quit_timeout"},
	{"rset", "smtp_rset_timeout", "lmtp_rset_timeout"},
	{"deadline", "smtp_delivery_deadline", "lmtp_delivery_deadline"},
}

// clientFromConfig reads the client settings of kind (KindSMTP or
// KindLMTP) from c, which carries a service's -o options when it has
// some. It returns the names it read: the -o options it applies.
func clientFromConfig(c *config.Config, kind string) (*Client, map[string]bool, error) {
	cl := &Client{}
	read := map[string]bool{}
	var lookup []string
	var nodns bool
	times := map[string]*time.Duration{
		"connect": &cl.Timeouts.Connect, "hello": &cl.Timeouts.Helo, "starttls": &cl.Timeouts.StartTLS,
		"mail": &cl.Timeouts.Mail, "rcpt": &cl.Timeouts.Rcpt, "data_init": &cl.Timeouts.DataInit,
		"data_xfer": &cl.Timeouts.DataXfer, "data_done": &cl.Timeouts.DataDone,
		"quit": &cl.Timeouts.Quit, "rset": &cl.Timeouts.Rset, "deadline": &cl.Timeouts.Delivery,
	}
	for _, p := range clientParams {
		name := p.smtp
		if kind == KindLMTP {
			name = p.lmtp
		}
		if name == "" {
			continue
		}
		read[name] = true
		var err error
		switch p.field {
		case "helo":
			cl.HeloName, err = c.Expand(name)
		case "tls":
			cl.TLSLevel, err = tlsLevel(c, name)
		case "lookup":
			lookup, err = c.List(name)
		case "nodns":
			nodns, err = c.Bool(name)
		case "mxlimit":
			cl.MXAddressLimit, err = c.Int(name)
		case "port":
			cl.Port, err = c.Int(name)
		case "bind":
			cl.BindAddress, err = bindAddress(c, name, false)
		case "bind6":
			cl.BindAddress6, err = bindAddress(c, name, true)
		default:
			*times[p.field], err = c.Time(name)
		}
		if err != nil {
			return nil, nil, err
		}
	}
	for _, m := range lookup {
		if strings.EqualFold(m, "dns") {
			cl.DNS = !nodns
		}
	}
	return cl, read, nil
}

// tlsLevel reads a *_tls_security_level parameter; a level holdfast does
// not implement is an error, never a quiet downgrade.
func tlsLevel(c *config.Config, name string) (string, error) {
	switch lvl := c.String(name); lvl {
	case "":
		return obsoleteLevel(c, strings.TrimSuffix(name, "_tls_security_level"))
	default:
		if _, ok := levelRank[lvl]; !ok {
			return "", &config.Error{File: whereFile(c, name), Param: name, Msg: fmt.Sprintf("unknown level %q", lvl)}
		}
		return lvl, nil
	}
}

// obsoleteLevel is the level of Postfix's older parameters, used when
// *_tls_security_level is empty (Postfix's smtp_tls_policy.c):
// smtp_enforce_tls = yes is verify, or encrypt with
// smtp_tls_enforce_peername = no; smtp_use_tls = yes is may.
func obsoleteLevel(c *config.Config, prefix string) (string, error) {
	if prefix != "smtp" { // lmtp has no such parameters in holdfast
		return TLSNone, nil
	}
	var use, enforce, peername bool
	for _, b := range []struct {
		name string
		p    *bool
	}{{"smtp_use_tls", &use}, {"smtp_enforce_tls", &enforce}, {"smtp_tls_enforce_peername", &peername}} {
		v, err := c.Bool(b.name)
		if err != nil {
			return "", err
		}
		*b.p = v
	}
	switch {
	case enforce && peername:
		return TLSVerify, nil
	case enforce:
		return TLSEncrypt, nil
	case use:
		return TLSMay, nil
	}
	return TLSNone, nil
}

// bindAddress reads smtp_bind_address (IPv4) or smtp_bind_address6.
func bindAddress(c *config.Config, name string, v6 bool) (netip.Addr, error) {
	v := c.String(name)
	if v == "" {
		return netip.Addr{}, nil
	}
	a, err := netip.ParseAddr(strings.Trim(v, "[]"))
	if err != nil || a.Is4() == v6 || a.Zone() != "" {
		return netip.Addr{}, &config.Error{File: whereFile(c, name), Param: name, Msg: fmt.Sprintf("bad address %q", v)}
	}
	return a, nil
}

func whereFile(c *config.Config, name string) string {
	if w := c.Where(name); w != "default" {
		return w
	}
	return ""
}

// postfixInternal are master.cf commands whose work holdfast does itself
// (queue, cleanup, bounces, flush, ...) or that serve no transport.
var postfixInternal = map[string]bool{
	"pickup": true, "cleanup": true, "qmgr": true, "oqmgr": true, "tlsmgr": true,
	"trivial-rewrite": true, "bounce": true, "flush": true, "proxymap": true,
	"showq": true, "verify": true, "anvil": true, "scache": true, "postlogd": true,
	"dnsblog": true, "tlsproxy": true, "postscreen": true, "smtpd": true, "qmqpd": true,
}

// transportsFromConfig builds the transports of master_cf (if set) and
// the built-in lmtp (lmtp_* parameters). It returns the start-up
// warnings: -o options it does not apply, services it does not run.
func transportsFromConfig(c *config.Config, o *Options) ([]string, error) {
	lmtp, _, err := clientFromConfig(c, KindLMTP)
	if err != nil {
		return nil, err
	}
	o.TransportDefs = map[string]*Transport{"lmtp": {Kind: KindLMTP, Client: lmtp, Where: "built in"}}
	path := c.String("master_cf")
	if path == "" {
		return nil, nil
	}
	services, err := config.LoadMaster(path)
	if err != nil {
		return nil, err
	}
	var warn []string
	for i := range services {
		s := &services[i]
		t, w, err := serviceTransport(c, s)
		if err != nil {
			return nil, err
		}
		warn = append(warn, w...)
		if t != nil {
			o.TransportDefs[s.Name] = t
		}
	}
	return warn, nil
}

// serviceTransport turns one master.cf entry into a transport, or nil for
// a service that is not one.
func serviceTransport(c *config.Config, s *config.Service) (*Transport, []string, error) {
	var warn []string
	where := s.Where()
	if s.Type != "unix" {
		if s.Command == "smtpd" {
			for _, o := range s.Options {
				if strings.HasPrefix(o.Name, "smtpd_") {
					return nil, nil, &config.Error{File: where, Param: o.Name, Msg: fmt.Sprintf("-o on service %s/%s is not applied: holdfast runs one SMTP server (smtpd_listen) with the main.cf settings; set it there", s.Name, s.Type)}
				}
			}
			warn = append(warn, fmt.Sprintf("%s: service %s/%s (smtpd) is not started from master.cf: holdfast listens on smtpd_listen", where, s.Name, s.Type))
		} else if len(s.Options) > 0 || !postfixInternal[s.Command] {
			warn = append(warn, fmt.Sprintf("%s: service %s/%s (%s) is not run by holdfast", where, s.Name, s.Type, s.Command))
		}
		return nil, warn, nil
	}
	t := &Transport{Where: where}
	switch s.Command {
	case "smtp", "lmtp":
		t.Kind = s.Command
		// $service_name is the service's own name, as in Postfix.
		opts := append([]config.Override{{Name: "service_name", Value: s.Name}}, s.Options...)
		cl, applied, err := clientFromConfig(c.With(s.File, s.Line, opts), t.Kind)
		if err != nil {
			return nil, nil, err
		}
		t.Client = cl
		warn = append(warn, ignoredOptions(s, applied)...)
		if s.MaxProc != "-" {
			t.MaxProc, _ = strconv.Atoi(s.MaxProc)
		}
	case "error":
		switch s.Name {
		case "error":
			t.Kind = KindError
		case "retry":
			t.Kind = KindRetry
		default: // error(8) itself refuses any other service name
			return nil, nil, &config.Error{File: where, Msg: fmt.Sprintf("service %s: the error command runs only as the error or retry service", s.Name)}
		}
		warn = append(warn, ignoredOptions(s, nil)...)
	case "discard":
		t.Kind = KindDiscard
		warn = append(warn, ignoredOptions(s, nil)...)
	default:
		if postfixInternal[s.Command] {
			if len(s.Options) > 0 {
				warn = append(warn, fmt.Sprintf("%s: service %s (%s): holdfast does this work itself; its -o options are not applied", where, s.Name, s.Command))
			}
			return nil, warn, nil
		}
		t.Unavailable = fmt.Sprintf("holdfast does not run the %s delivery agent (%s, service %s)", s.Command, where, s.Name)
	}
	return t, warn, nil
}

// ignoredOptions reports a service's -o options and arguments that are
// not applied (applied lists the ones that are).
func ignoredOptions(s *config.Service, applied map[string]bool) []string {
	var warn []string
	for _, o := range s.Options {
		if applied[o.Name] {
			continue
		}
		what := "has no effect on a holdfast transport"
		if !config.Known(o.Name) {
			what = "is an unknown parameter"
		}
		warn = append(warn, fmt.Sprintf("%s: service %s: -o %s %s", s.Where(), s.Name, o.Name, what))
	}
	if len(s.Args) > 0 {
		warn = append(warn, fmt.Sprintf("%s: service %s: arguments %q are not used by holdfast", s.Where(), s.Name, strings.Join(s.Args, " ")))
	}
	return warn
}

// transportWarnings checks every transport_maps entry, default_transport
// and relay_transport against the transports of o, naming the file and
// line of each problem.
func transportWarnings(c *config.Config, o Options) ([]string, error) {
	var warn []string
	for _, name := range []string{"default_transport", "relay_transport"} {
		if msg := o.CheckTransport(c.String(name)); msg != "" {
			warn = append(warn, fmt.Sprintf("%s: %s: %s", c.Where(name), name, msg))
		}
	}
	entries, err := c.Entries("transport_maps")
	if err != nil {
		return nil, err
	}
	for _, e := range entries {
		if msg := o.CheckTransport(e.Value); msg != "" {
			warn = append(warn, fmt.Sprintf("%s: %s: %s", e.Where(), e.Key, msg))
		}
	}
	return warn, nil
}
