package dnsr

import (
	"context"
	"errors"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"strings"

	"github.com/miekg/dns"
	"golang.org/x/net/idna"

	"github.com/holdfast-mta/holdfast/internal/addr"
)

// Kind classifies a failed lookup.
type Kind int

const (
	// NXDomain: the name does not exist (RCODE 3). Permanent.
	NXDomain Kind = iota + 1
	// NoData: the name exists but has no record of the type. Permanent.
	NoData
	// Temporary: no server gave an answer (SERVFAIL, REFUSED, timeout,
	// network error); the question may succeed later.
	Temporary
)

// Error is a failed lookup.
type Error struct {
	Name string // the name asked, without the trailing dot
	Type string // "MX", "A", "AAAA", "TXT", "PTR"
	Kind Kind
	Err  error // the cause of a temporary failure
}

func (e *Error) Error() string {
	switch e.Kind {
	case NXDomain:
		return "lookup " + e.Name + " " + e.Type + ": host not found"
	case NoData:
		return "lookup " + e.Name + " " + e.Type + ": no " + e.Type + " record"
	}
	s := "lookup " + e.Name + " " + e.Type + ": temporary failure"
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

func (e *Error) Unwrap() error { return e.Err }

// IsNotFound reports a permanent negative answer: the name does not exist
// or has no record of the type asked.
func IsNotFound(err error) bool {
	var e *Error
	return errors.As(err, &e) && (e.Kind == NXDomain || e.Kind == NoData)
}

// IsNXDomain reports that the name does not exist at all.
func IsNXDomain(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Kind == NXDomain
}

// IsTemporary reports a failure that may go away (no answer).
func IsTemporary(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Kind == Temporary
}

// lookupAD asks for name's records of qtype, and reports whether the
// answer (records or their absence) came with the AD bit. An invalid
// name is NXDomain, as a server would answer it.
func (r *Resolver) lookupAD(ctx context.Context, name string, qtype uint16) ([]dns.RR, bool, error) {
	name = strings.TrimSuffix(name, ".")
	typ := dns.TypeToString[qtype]
	q := name
	if !addr.IsASCII(q) {
		var err error
		if q, err = idna.Lookup.ToASCII(name); err != nil {
			return nil, false, &Error{Name: name, Type: typ, Kind: NXDomain}
		}
	}
	if _, ok := dns.IsDomainName(q); !ok {
		return nil, false, &Error{Name: name, Type: typ, Kind: NXDomain}
	}
	a := r.query(ctx, dns.Fqdn(q), qtype)
	if a.kind != 0 {
		return nil, a.ad, &Error{Name: name, Type: typ, Kind: a.kind, Err: a.err}
	}
	return a.rrs, a.ad, nil
}

// LookupMX returns name's MX records, by preference, hosts of equal
// preference in random order (RFC 5321 sec 5.1). Host names lose their
// trailing dot; a null MX (RFC 7505) is a host "".
func (r *Resolver) LookupMX(ctx context.Context, name string) ([]*net.MX, error) {
	mxs, _, err := r.LookupMXSecure(ctx, name)
	return mxs, err
}

// LookupMXSecure is LookupMX that also reports whether the MX RRset is
// DNSSEC-secure (the resolver set the AD bit), which DANE needs to trust
// the MX host names (RFC 7672 sec 2.2.1).
func (r *Resolver) LookupMXSecure(ctx context.Context, name string) ([]*net.MX, bool, error) {
	mxs, ad, err := lookupEachAD(ctx, r, name, dns.TypeMX, func(rr dns.RR) (*net.MX, bool) {
		mx := rr.(*dns.MX)
		return &net.MX{Host: strings.TrimSuffix(mx.Mx, "."), Pref: mx.Preference}, true
	})
	if err != nil {
		return nil, false, err
	}
	rand.Shuffle(len(mxs), func(i, j int) { mxs[i], mxs[j] = mxs[j], mxs[i] })
	slices.SortStableFunc(mxs, func(a, b *net.MX) int { return int(a.Pref) - int(b.Pref) })
	return mxs, ad, nil
}

// LookupA returns name's IPv4 addresses (DNSBL answers are A records).
func (r *Resolver) LookupA(ctx context.Context, name string) ([]netip.Addr, error) {
	return r.addrs(ctx, name, dns.TypeA)
}

// LookupIP returns name's IPv4 then IPv6 addresses. It fails only when
// both lookups do: temporarily if either did, else as the A lookup.
func (r *Resolver) LookupIP(ctx context.Context, name string) ([]netip.Addr, error) {
	v4, err4 := r.addrs(ctx, name, dns.TypeA)
	v6, err6 := r.addrs(ctx, name, dns.TypeAAAA)
	if out := append(v4, v6...); len(out) > 0 {
		return out, nil
	}
	if IsTemporary(err6) && !IsTemporary(err4) {
		return nil, err6
	}
	return nil, err4
}

func (r *Resolver) addrs(ctx context.Context, name string, qtype uint16) ([]netip.Addr, error) {
	return lookupEach(ctx, r, name, qtype, func(rr dns.RR) (netip.Addr, bool) {
		var ip net.IP
		switch v := rr.(type) {
		case *dns.A:
			ip = v.A
		case *dns.AAAA:
			ip = v.AAAA
		}
		a, ok := netip.AddrFromSlice(ip)
		return a.Unmap(), ok
	})
}

// lookupEach looks name up and returns each record of the answer as f
// reads it, leaving out those f refuses.
func lookupEach[T any](ctx context.Context, r *Resolver, name string, qtype uint16, f func(dns.RR) (T, bool)) ([]T, error) {
	out, _, err := lookupEachAD(ctx, r, name, qtype, f)
	return out, err
}

// lookupEachAD is lookupEach that also reports whether the answer (or the
// error's denial) came with the AD bit, as lookupAD.
func lookupEachAD[T any](ctx context.Context, r *Resolver, name string, qtype uint16, f func(dns.RR) (T, bool)) ([]T, bool, error) {
	rrs, ad, err := r.lookupAD(ctx, name, qtype)
	if err != nil {
		return nil, ad, err
	}
	out := make([]T, 0, len(rrs))
	for _, rr := range rrs {
		if v, ok := f(rr); ok {
			out = append(out, v)
		}
	}
	return out, ad, nil
}

// LookupTXT returns name's TXT records, each one's strings joined.
func (r *Resolver) LookupTXT(ctx context.Context, name string) ([]string, error) {
	return lookupEach(ctx, r, name, dns.TypeTXT, func(rr dns.RR) (string, bool) {
		return strings.Join(rr.(*dns.TXT).Txt, ""), true
	})
}

// LookupPTR returns the names of an address (reverse DNS), without the
// trailing dot.
func (r *Resolver) LookupPTR(ctx context.Context, addr netip.Addr) ([]string, error) {
	rev, err := dns.ReverseAddr(addr.Unmap().String())
	if err != nil {
		return nil, &Error{Name: addr.String(), Type: "PTR", Kind: NXDomain}
	}
	return lookupEach(ctx, r, rev, dns.TypePTR, func(rr dns.RR) (string, bool) {
		return strings.TrimSuffix(rr.(*dns.PTR).Ptr, "."), true
	})
}

// LookupTLSA returns the TLSA records of name ("_25._tcp.mx.example.")
// and whether the answer is DNSSEC-secure: the resolver set the AD bit.
// Only a validating resolver's AD may be trusted (RFC 7672 sec 2.1.1):
// dns_resolver must name one on a trusted path (the local host). A
// secure denial (NXDOMAIN or no TLSA records) is an error for which
// IsNotFound holds, with secure true.
func (r *Resolver) LookupTLSA(ctx context.Context, name string) ([]*dns.TLSA, bool, error) {
	return lookupEachAD(ctx, r, name, dns.TypeTLSA, func(rr dns.RR) (*dns.TLSA, bool) {
		return rr.(*dns.TLSA), true
	})
}
