package delivery

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/holdfast-mta/holdfast/dnsr"
)

// target is one address to connect to for a hop.
type target struct {
	Name string     // MX host name (or the hop's host)
	Addr netip.Addr // its address
	Port int
	Path string  // Unix socket of an lmtp:unix:/path hop (then no Addr)
	cf   *Client // the transport's client settings
	lmtp bool    // speak LMTP (RFC 2033)
	// viaMX: the name came from an MX lookup, mxSecure: a DNSSEC-secure
	// one (DANE trusts only a secure MX host name, RFC 7672 sec 2.2.1).
	viaMX, mxSecure bool
	// dest is the next hop the target serves, in transport(5) syntax
	// ("example.com", "[192.0.2.1]:2525"): the X of "mail for X loops
	// back to myself".
	dest string
	// turn: the session is an ODMR turnaround on a connection the
	// customer opened; it greets with whatever name it has, and cannot
	// be a loop.
	turn bool
}

// ip is the address part of "name[addr]": the IP address, or the socket
// path of a Unix-domain next hop.
func (t target) ip() string {
	if t.Path != "" {
		return t.Path
	}
	return t.Addr.String()
}

// Relay is Postfix's "name[addr]:port" form used in logs and replies
// ("name[/path]" for a Unix socket).
func (t target) Relay() string {
	if t.Path != "" {
		return fmt.Sprintf("%s[%s]", t.Name, t.Path)
	}
	return fmt.Sprintf("%s[%s]:%d", t.Name, t.Addr, t.Port)
}

// resolverFor returns the resolver of the options: the shared one given,
// else one that asks only DNSServer (dns_resolver), else the system's
// name servers.
func resolverFor(o *Options) (*dnsr.Resolver, error) {
	if o.Resolver != nil {
		return o.Resolver, nil
	}
	return dnsr.New(dnsr.Options{Server: o.DNSServer})
}

// lookupError is a failed name lookup, permanent (the name does not exist)
// or not.
type lookupError struct {
	perm bool
	text string
}

func (e *lookupError) Error() string { return e.text }

// targets lists the addresses of a hop in the order to try them: MX hosts
// by preference (RFC 5321 sec 5.1), each host's addresses, falling back to
// the host's own A/AAAA records when it has no MX; a [host] or an address
// skips MX. At most MXAddressLimit addresses. For SMTP, the list ends
// before the first address of holdfast itself (Options.Self): as Postfix's
// smtp_find_self, only better MX hosts than ourselves are tried, and a
// hop that is only ourselves is a loop (deferred, 4.4.6).
func (d *Scheduler) targets(ctx context.Context, h hop) ([]target, error) {
	out, err := d.lookupTargets(ctx, h)
	if err != nil || len(out) == 0 || out[0].lmtp {
		return out, err
	}
	for i := range out {
		out[i].dest = h.Nexthop()
	}
	for i := range out {
		if d.o.Self != nil && out[i].Addr.IsValid() && d.o.Self(netip.AddrPortFrom(out[i].Addr, uint16(out[i].Port))) {
			if i == 0 {
				return nil, &lookupError{text: "4.4.6 mail for " + h.Nexthop() + " loops back to myself"}
			}
			return out[:i], nil
		}
	}
	return out, nil
}

// lookupTargets is targets without the loop check.
func (d *Scheduler) lookupTargets(ctx context.Context, h hop) ([]target, error) {
	tr := d.transport(h.Transport)
	cf, lmtp := tr.Client, tr.Kind == KindLMTP
	if cf == nil { // not an SMTP or LMTP transport: resolve never gives one
		return nil, &lookupError{text: "4.3.0 mail transport unavailable"}
	}
	if h.Unix {
		return []target{{Name: d.o.Hostname, Path: h.Host, cf: cf, lmtp: lmtp}}, nil
	}
	port := h.Port
	if port == 0 {
		port = cf.Port
	}
	if a, err := netip.ParseAddr(h.Host); err == nil {
		return []target{{Name: h.Host, Addr: a.Unmap(), Port: port, cf: cf, lmtp: lmtp}}, nil
	}
	dns := cf.DNS
	var hosts []string
	viaMX, mxSecure := false, false
	if h.MX && dns {
		var err error
		if hosts, mxSecure, err = d.mxHosts(ctx, h.Host); err != nil {
			return nil, err
		}
		viaMX = hosts != nil
	}
	if len(hosts) == 0 {
		hosts = []string{h.Host}
	}
	var out []target
	var firstErr error
	for _, name := range hosts {
		addrs, err := d.addrs(ctx, name, dns)
		if err != nil {
			if firstErr == nil {
				firstErr = dnsError(name, "A", err)
			}
			continue
		}
		for _, a := range addrs {
			out = append(out, target{Name: name, Addr: a.Unmap(), Port: port, cf: cf, lmtp: lmtp, viaMX: viaMX, mxSecure: mxSecure})
			if len(out) == cf.MXAddressLimit {
				return out, nil
			}
		}
	}
	if len(out) == 0 {
		return nil, firstErr
	}
	return out, nil
}

// mxHosts looks up a domain's MX hosts, most preferred first, and
// whether the answer was DNSSEC-validated. None (nil) when the domain has
// no MX record: then its own address records serve (RFC 5321 sec 5.1).
func (d *Scheduler) mxHosts(ctx context.Context, domain string) ([]string, bool, error) {
	mxs, secure, err := d.resolver.LookupMXSecure(ctx, domain)
	switch {
	case isNotFound(err):
		return nil, false, nil
	case err != nil:
		return nil, false, dnsError(domain, "MX", err)
	}
	hosts := []string{}
	for _, mx := range mxs {
		name := strings.TrimSuffix(mx.Host, ".")
		if name == "" && len(mxs) == 1 { // RFC 7505 null MX
			return nil, false, &lookupError{perm: true, text: fmt.Sprintf("5.1.10 Host %s has a null MX record (RFC 7505)", domain)}
		}
		if name != "" {
			hosts = append(hosts, name)
		}
	}
	return hosts, secure, nil
}

// addrs looks up a host's addresses: in the DNS (absolute name, no
// search domain), or with smtp_host_lookup = native through the system's
// resolver as given (/etc/hosts).
func (d *Scheduler) addrs(ctx context.Context, name string, dns bool) ([]netip.Addr, error) {
	if dns {
		return d.resolver.LookupIP(ctx, name)
	}
	return net.DefaultResolver.LookupNetIP(ctx, "ip", name)
}

// isNotFound: the name does not exist or has no such record (permanent).
func isNotFound(err error) bool {
	var de *net.DNSError
	return dnsr.IsNotFound(err) || errors.As(err, &de) && de.IsNotFound
}

// dnsError words a failed lookup as Postfix's smtp(8) does; a name that
// does not exist is permanent (5.4.4), anything else is retried (4.4.3).
func dnsError(name, typ string, err error) error {
	if isNotFound(err) {
		return &lookupError{perm: true, text: fmt.Sprintf("5.4.4 Host or domain name not found. Name service error for name=%s type=%s: Host not found", name, typ)}
	}
	return &lookupError{text: fmt.Sprintf("4.4.3 Host or domain name not found. Name service error for name=%s type=%s: Host not found, try again", name, typ)}
}
