package delivery

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/holdfast-mta/holdfast/internal/addr"
)

// routeKind says what a transport does with a recipient.
type routeKind uint8

const (
	routeSMTP        routeKind = iota // deliver over SMTP or LMTP to the next hop
	routeError                        // error:text — bounce with text (error(8))
	routeDiscard                      // discard:text — drop, log (discard(8))
	routeRetry                        // retry:text — defer with text (error(8) as retry)
	routeUnavailable                  // a transport holdfast cannot run: defer
)

// hop is a (transport, next hop) pair: the unit of connection reuse,
// concurrency and the dead-destination list (Postfix's per-destination
// queue).
type hop struct {
	Transport string
	Host      string // domain or host name, or IP address of a [literal]
	Port      int    // 0 = the transport's default port
	MX        bool   // look up MX records for Host ([host] skips them)
	Unix      bool   // LMTP over the Unix socket at Host (lmtp:unix:/path)
}

// Key names the hop in logs, the dead list and the store's "dest" bucket:
// "transport:nexthop" as Postfix writes it.
func (h hop) Key() string { return h.Transport + ":" + h.Nexthop() }

// Nexthop is the next hop in transport(5) syntax.
func (h hop) Nexthop() string {
	if h.Unix {
		return "unix:" + h.Host
	}
	s := h.Host
	if !h.MX {
		s = "[" + s + "]"
	}
	if h.Port != 0 {
		s += ":" + strconv.Itoa(h.Port)
	}
	return s
}

// route is where one recipient goes.
type route struct {
	Kind routeKind
	Hop  hop
	Text string // error or discard text
}

// resolve maps a recipient to its route as Postfix's trivial-rewrite does:
// the transport is the transport_maps entry's (Postfix search order, in
// the table), else relay_transport for a relay_domains recipient, else
// default_transport; the next hop is the map entry's, else the one named
// in relay_transport or default_transport, else relayhost, else the
// recipient's domain.
func (d *Scheduler) resolve(rcpt string) (route, error) {
	domain := addr.DomainOf(rcpt)
	transport, nexthop := "", ""
	if d.o.Transports != nil {
		v, found, err := d.o.Transports.Lookup(rcpt)
		if err != nil {
			return route{}, fmt.Errorf("transport_maps lookup %s: %w", rcpt, err)
		}
		if found {
			transport, nexthop = splitTransport(strings.TrimSpace(v))
		}
	}
	if transport == "" {
		class := d.o.DefaultTransport
		if d.o.RelayDomains != nil && domain != "" {
			relay, err := d.o.RelayDomains.Match(domain)
			if err != nil {
				return route{}, fmt.Errorf("relay_domains lookup %s: %w", domain, err)
			}
			if relay {
				class = d.o.RelayTransport
			}
		}
		t, nh := splitTransport(class)
		if t == "" {
			t = "smtp"
		}
		transport = t
		if nexthop == "" {
			nexthop = nh
		}
	}
	t := d.transport(transport)
	switch t.Kind {
	case KindError:
		return route{Kind: routeError, Text: nexthop}, nil
	case KindRetry:
		return route{Kind: routeRetry, Text: nexthop}, nil
	case KindDiscard:
		return route{Kind: routeDiscard, Text: nexthop}, nil
	case "":
		return route{Kind: routeUnavailable, Text: t.Unavailable}, nil
	}
	if nexthop == "" && d.o.Relayhost != "" {
		nexthop = d.o.Relayhost
	}
	if nexthop == "" {
		if domain == "" {
			return route{Kind: routeError, Text: "5.1.3 bad address syntax"}, nil
		}
		nexthop = domain
	}
	h, err := parseNexthop(nexthop, t.Kind)
	if err != nil {
		return route{}, err
	}
	h.Transport = transport
	return route{Kind: routeSMTP, Hop: h}, nil
}

// splitTransport splits a transport(5) result into transport and next hop:
// "transport:nexthop", "transport:", ":nexthop", and the bare next hops
// "[host]", "[host]:port" and "host:port".
func splitTransport(v string) (transport, nexthop string) {
	if strings.HasPrefix(v, "[") {
		return "", v
	}
	i := strings.IndexByte(v, ':')
	if i < 0 {
		return v, ""
	}
	t, rest := v[:i], v[i+1:]
	if strings.Contains(t, ".") && isDigits(rest) {
		return "", v // host:port
	}
	return t, rest
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// parseNexthop reads "[host]", "[host]:port", "host", "host:port".
// RFC 5321 sec 4.1.3 address literals ("[ipv6:...]") are accepted. For
// LMTP (kind KindLMTP) it also reads lmtp(8)'s "inet:" prefix and
// "unix:/path", and never looks up MX records.
func parseNexthop(s, kind string) (hop, error) {
	var h hop
	h.MX = kind != KindLMTP
	if kind == KindLMTP {
		if p, ok := strings.CutPrefix(s, "unix:"); ok {
			if p == "" {
				return h, fmt.Errorf("bad next hop %q", s)
			}
			return hop{Host: p, Unix: true}, nil
		}
		s = strings.TrimPrefix(s, "inet:")
	}
	host := s
	if strings.HasPrefix(s, "[") {
		j := strings.IndexByte(s, ']')
		if j < 0 {
			return h, fmt.Errorf("bad next hop %q", s)
		}
		host, h.MX = s[1:j], false
		rest := s[j+1:]
		if rest != "" {
			if rest[0] != ':' || !isDigits(rest[1:]) {
				return h, fmt.Errorf("bad next hop %q", s)
			}
			h.Port, _ = strconv.Atoi(rest[1:])
		}
		host = strings.TrimPrefix(strings.TrimPrefix(host, "ipv6:"), "IPv6:")
	} else if i := strings.LastIndexByte(s, ':'); i >= 0 && isDigits(s[i+1:]) && !strings.Contains(s[:i], ":") {
		host = s[:i]
		h.Port, _ = strconv.Atoi(s[i+1:])
	}
	if host == "" || h.Port > 65535 {
		return h, fmt.Errorf("bad next hop %q", s)
	}
	if _, err := netip.ParseAddr(host); err == nil {
		h.MX = false // an address has no MX records
	}
	h.Host = addr.Fold(host) // A-labels for the DNS and the dead list
	return h, nil
}
