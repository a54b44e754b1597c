package delivery

import (
	"fmt"
	"net/netip"
	"sort"
	"strings"
)

// Transport kinds: what holdfast does with mail for a transport, as the
// Postfix delivery agent of that name does it.
const (
	KindSMTP    = "smtp"    // SMTP client, smtp(8)
	KindLMTP    = "lmtp"    // LMTP client, lmtp(8) (RFC 2033)
	KindError   = "error"   // bounce with the next hop as the reason, error(8)
	KindRetry   = "retry"   // defer with the next hop as the reason, error(8) as retry
	KindDiscard = "discard" // drop and log, discard(8)
)

// Transport is a transport that transport_maps, default_transport or
// relay_transport can name: built in (smtp, relay, lmtp, error, retry,
// discard and every defer_transports name) or a master.cf service.
type Transport struct {
	// Kind is one of the Kind constants, "" for a transport holdfast
	// cannot run (local, virtual, pipe, an unknown name): its mail is
	// deferred with Unavailable as the reason, never bounced.
	Kind        string
	Unavailable string
	// Client holds the SMTP or LMTP client settings, with the service's
	// -o options applied (clientFromConfig); nil = the Options' own
	// (smtp_* parameters).
	Client *Client
	// MaxProc is master.cf's maxproc: deliveries of this transport in
	// progress at once, all destinations together; 0 = no limit other
	// than delivery_concurrency_limit.
	MaxProc int
	// Where names the definition in logs: "master.cf:12" or "built in".
	Where string
}

// Client are the settings of one SMTP or LMTP transport.
type Client struct {
	// HeloName is sent in EHLO (smtp_helo_name) or LHLO (lmtp_lhlo_name).
	HeloName string
	// TLSLevel is the transport's smtp_tls_security_level (a TLS*
	// constant); TLS the other smtp_tls_* settings (nil = the Options').
	TLSLevel string
	TLS      *TLSSettings
	// Timeouts of the protocol stages.
	Timeouts Timeouts
	// DNS: host names are looked up in the DNS (MX records for SMTP
	// next hops without [ ]; LMTP never uses MX records).
	DNS bool
	// MXAddressLimit caps the addresses tried per delivery.
	MXAddressLimit int
	// Port is the TCP port of a next hop given without one: 25 for SMTP,
	// lmtp_tcp_port (24) for LMTP.
	Port int
	// BindAddress and BindAddress6 are the local addresses of connections
	// to IPv4 and IPv6 next hops (smtp_bind_address, smtp_bind_address6);
	// invalid = the system's choice.
	BindAddress, BindAddress6 netip.Addr
}

// builtinClient is the client of the smtp-kind transports from Options.
func (o *Options) builtinClient() *Client {
	return &Client{HeloName: o.HeloName, TLSLevel: o.TLSLevel, TLS: o.TLS, Timeouts: o.Timeouts, DNS: o.DNS,
		MXAddressLimit: o.MXAddressLimit, Port: o.Port, BindAddress: o.BindAddress, BindAddress6: o.BindAddress6}
}

// builtinTransports are the transports holdfast runs without a master.cf
// entry, as Postfix's stock master.cf defines them. The built-in lmtp,
// with the lmtp_* parameters, is in Options.TransportDefs
// (transportsFromConfig).
func builtinTransports(o *Options) map[string]*Transport {
	smtp := o.builtinClient()
	m := map[string]*Transport{
		"smtp":    {Kind: KindSMTP, Client: smtp, Where: "built in"},
		"relay":   {Kind: KindSMTP, Client: smtp, Where: "built in"},
		"error":   {Kind: KindError, Where: "built in"},
		"retry":   {Kind: KindRetry, Where: "built in"},
		"discard": {Kind: KindDiscard, Where: "built in"},
	}
	for _, name := range o.DeferTransports {
		if m[name] == nil {
			m[name] = &Transport{Kind: KindSMTP, Client: smtp, Where: "defer_transports"}
		}
	}
	return m
}

// completeTransports merges the given transports over the built-in ones;
// their clients take from the Options what they have no parameter for.
func completeTransports(o *Options) map[string]*Transport {
	m := builtinTransports(o)
	for name, t := range o.TransportDefs {
		t := *t
		if t.Kind == KindSMTP || t.Kind == KindLMTP {
			if t.Client == nil {
				t.Client = m["smtp"].Client
			}
			c := t.Client.inherit(t.Kind, o)
			t.Client = &c
		}
		m[name] = &t
	}
	return m
}

// inherit takes from the scheduler's options what a client has no
// parameter of its own for: the smtp_tls_* settings other than the level
// (TLSSettings), the port of an SMTP client (Options.Port) and the
// address limit of an LMTP client (smtp_mx_address_limit).
func (c Client) inherit(kind string, o *Options) Client {
	if c.TLS == nil {
		c.TLS = o.TLS
	}
	switch kind {
	case KindSMTP:
		if c.Port == 0 {
			c.Port = o.Port
		}
	case KindLMTP:
		c.MXAddressLimit = o.MXAddressLimit
	}
	return c
}

// transport returns the transport named name; a name holdfast does not
// know is unavailable.
func (d *Scheduler) transport(name string) *Transport {
	m := d.transports
	if m == nil { // a Scheduler built without New (unit tests)
		m = completeTransports(&d.o)
	}
	if t := m[name]; t != nil {
		return t
	}
	return undefined(name)
}

// undefined is the transport for a name that is neither built in nor
// defined in master_cf.
func undefined(name string) *Transport {
	switch name {
	case "local", "virtual", "pipe":
		return &Transport{Unavailable: fmt.Sprintf("transport %s is Postfix's %s delivery agent, which holdfast does not run (no local or mailbox delivery)", name, name)}
	}
	return &Transport{Unavailable: fmt.Sprintf("transport %s is not defined (holdfast runs smtp, relay, lmtp, error, retry, discard, the defer_transports names and the smtp and lmtp services of master_cf)", name)}
}

// TransportNames lists the transports a Scheduler with these options
// runs, sorted, for start-up checks.
func (o Options) TransportNames() []string {
	m := completeTransports(&o)
	out := make([]string, 0, len(m))
	for n, t := range m {
		if t.Kind != "" {
			out = append(out, n)
		}
	}
	sort.Strings(out)
	return out
}

// CheckTransport says why a transport(5) result ("transport:nexthop")
// cannot be delivered by these options, or "" when it can. serve calls it
// for every transport_maps entry, default_transport and relay_transport,
// so that an operator sees the problem at start-up with its file and line.
func (o Options) CheckTransport(value string) string {
	m := completeTransports(&o)
	name, nexthop := splitTransport(strings.TrimSpace(value))
	if name == "" {
		return ""
	}
	t := m[name]
	if t == nil {
		t = undefined(name)
	}
	if t.Kind == "" {
		return t.Unavailable + ": its mail will be deferred"
	}
	if (t.Kind == KindSMTP || t.Kind == KindLMTP) && nexthop != "" {
		if _, err := parseNexthop(nexthop, t.Kind); err != nil {
			return err.Error()
		}
	}
	return ""
}
