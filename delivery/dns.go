package delivery

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
)

// target is one address to connect to for a hop.
type target struct {
	Name string     // MX host name (or the hop's host)
	Addr netip.Addr // its address
	Port int
}

// Relay is Postfix's "name[addr]:port" form used in logs and replies.
func (t target) Relay() string {
	return fmt.Sprintf("%s[%s]:%d", t.Name, t.Addr, t.Port)
}

// resolver builds the resolver from the options: a given *net.Resolver,
// a Go resolver that asks only DNSServer, or the system's.
func resolverFor(o *Options) *net.Resolver {
	if o.Resolver != nil {
		return o.Resolver
	}
	if o.DNSServer != "" {
		server := o.DNSServer
		return &net.Resolver{
			PreferGo: true,
			Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, network, server)
			},
		}
	}
	return net.DefaultResolver
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
// skips MX. At most MXAddressLimit addresses.
func (d *Scheduler) targets(ctx context.Context, h hop) ([]target, error) {
	port := h.Port
	if port == 0 {
		port = d.o.Port
	}
	if a, err := netip.ParseAddr(h.Host); err == nil {
		return []target{{Name: h.Host, Addr: a.Unmap(), Port: port}}, nil
	}
	r := d.resolver
	if !d.o.DNS {
		r = net.DefaultResolver // smtp_host_lookup = native: no MX records
	}
	var hosts []string
	if h.MX && d.o.DNS {
		mxs, err := r.LookupMX(ctx, fqdn(h.Host))
		switch {
		case err == nil:
			for _, mx := range mxs {
				name := strings.TrimSuffix(mx.Host, ".")
				if name == "" && len(mxs) == 1 { // RFC 7505 null MX
					return nil, &lookupError{perm: true, text: fmt.Sprintf("5.1.10 Host %s has a null MX record (RFC 7505)", h.Host)}
				}
				if name != "" {
					hosts = append(hosts, name)
				}
			}
		case isNotFound(err):
			// No MX: the domain's own address records (RFC 5321 sec 5.1).
		default:
			return nil, dnsError(h.Host, "MX", err)
		}
	}
	if len(hosts) == 0 {
		hosts = []string{h.Host}
	}
	var out []target
	var firstErr error
	for _, name := range hosts {
		addrs, err := r.LookupNetIP(ctx, "ip", lookupName(name, d.o.DNS))
		if err != nil {
			if firstErr == nil {
				firstErr = dnsError(name, "A", err)
			}
			continue
		}
		for _, a := range addrs {
			out = append(out, target{Name: name, Addr: a.Unmap(), Port: port})
			if len(out) == d.o.MXAddressLimit {
				return out, nil
			}
		}
	}
	if len(out) == 0 {
		return nil, firstErr
	}
	return out, nil
}

func fqdn(name string) string { return strings.TrimSuffix(name, ".") + "." }

// lookupName is the name passed to the resolver: absolute for DNS so that
// no search domain is appended, as given for native lookups (/etc/hosts).
func lookupName(name string, dns bool) string {
	if dns {
		return fqdn(name)
	}
	return name
}

func isNotFound(err error) bool {
	var de *net.DNSError
	return errors.As(err, &de) && de.IsNotFound
}

// dnsError words a failed lookup as Postfix's smtp(8) does; a name that
// does not exist is permanent (5.4.4), anything else is retried (4.4.3).
func dnsError(name, typ string, err error) error {
	if isNotFound(err) {
		return &lookupError{perm: true, text: fmt.Sprintf("5.4.4 Host or domain name not found. Name service error for name=%s type=%s: Host not found", name, typ)}
	}
	return &lookupError{text: fmt.Sprintf("4.4.3 Host or domain name not found. Name service error for name=%s type=%s: Host not found, try again", name, typ)}
}
