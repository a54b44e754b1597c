package config

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"

	"github.com/holdfast-mta/holdfast/internal/addr"
)

// DomainList is a Postfix domain list (relay_domains, fast_flush_domains,
// mydestination): names, `.domain` patterns, `/file/name` entries and
// `type:table` lookups, with optional `!` negation; the first matching
// pattern decides.
type DomainList struct {
	pats   []domainPattern
	parent bool // parent_domain_matches_subdomains lists the parameter
}

type domainPattern struct {
	neg   bool
	name  string // lower-case pattern, "" for a table
	table Table
}

// Domains reads a domain list parameter, opening its files and tables. A
// pattern `example.com` also matches sub-domains when the parameter is in
// parent_domain_matches_subdomains (fast_flush_domains and relay_domains
// are, by default); `.example.com` always matches sub-domains only.
func (c *Config) Domains(name string) (*DomainList, error) {
	pats, err := c.domainPatterns(name, true)
	if err != nil {
		return nil, err
	}
	return &DomainList{pats: pats, parent: c.ParentMatchesSubdomains(name)}, nil
}

// domainPatterns parses a domain list; open says whether to read files and
// open tables (false: check the syntax only).
func (c *Config) domainPatterns(name string, open bool) ([]domainPattern, error) {
	words, err := c.List(name)
	if err != nil {
		return nil, err
	}
	var pats []domainPattern
	for _, w := range words {
		p := domainPattern{}
		if strings.HasPrefix(w, "!") {
			p.neg, w = true, w[1:]
		}
		switch {
		case w == "":
			return nil, c.errorf(name, "empty pattern after '!'")
		case strings.HasPrefix(w, "/"):
			if !open {
				continue
			}
			names, err := readNames(w)
			if err != nil {
				return nil, c.errorf(name, "%v", err)
			}
			for _, n := range names {
				q := domainPattern{neg: p.neg}
				if strings.HasPrefix(n, "!") {
					q.neg, n = !q.neg, n[1:]
				}
				q.name = normDomain(n)
				pats = append(pats, q)
			}
			continue
		case strings.Contains(w, ":") && !strings.HasPrefix(w, "["):
			if _, _, err := splitTableSpec(w); err != nil {
				return nil, c.errorf(name, "%v", err)
			}
			if open {
				t, err := OpenTable(w)
				if err != nil {
					return nil, c.errorf(name, "%v", err)
				}
				p.table = t
			}
		default:
			p.name = normDomain(w)
		}
		pats = append(pats, p)
	}
	return pats, nil
}

// normDomain gives a domain-list pattern or a name matched against one
// its destination form (addr.Fold: lower case, no trailing dot, A-labels),
// keeping the leading dot of a `.domain` pattern, so that `café.test` and
// `xn--caf-dma.test` are one name in relay_domains, fast_flush_domains and
// mydestination whichever form the list or the mail uses.
func normDomain(s string) string {
	if strings.HasPrefix(s, ".") {
		return "." + addr.Fold(s[1:])
	}
	return addr.Fold(s)
}

// Empty reports whether the list has no patterns (e.g. fast_flush_domains
// is empty: the fast flush service is off).
func (d *DomainList) Empty() bool { return d == nil || len(d.pats) == 0 }

// Match reports whether domain matches the list (Postfix match_hostname).
// The error is a table lookup failure.
func (d *DomainList) Match(domain string) (bool, error) {
	if d == nil {
		return false, nil
	}
	domain = normDomain(domain)
	if domain == "" {
		return false, nil
	}
	for _, p := range d.pats {
		ok, err := d.matchOne(p, domain)
		if err != nil {
			return false, err
		}
		if ok {
			return !p.neg, nil
		}
	}
	return false, nil
}

func (d *DomainList) matchOne(p domainPattern, domain string) (bool, error) {
	if p.table != nil {
		return d.matchTable(p.table, domain)
	}
	if p.name == domain {
		return true, nil
	}
	if strings.HasPrefix(p.name, ".") {
		return strings.HasSuffix(domain, p.name), nil
	}
	return d.parent && strings.HasSuffix(domain, "."+p.name), nil
}

// matchTable looks the name up, then each parent: `example.com` in parent
// style, `.example.com` otherwise (Postfix match_hostname).
func (d *DomainList) matchTable(t Table, domain string) (bool, error) {
	if _, ok, err := t.Lookup(domain); err != nil || ok {
		return ok, err
	}
	if strings.HasPrefix(domain, "[") {
		return false, nil
	}
	for rest := domain; ; {
		i := strings.IndexByte(rest, '.')
		if i < 0 || i == len(rest)-1 {
			return false, nil
		}
		key := rest[i:]
		rest = rest[i+1:]
		if d.parent {
			key = rest
		}
		if _, ok, err := t.Lookup(key); err != nil || ok {
			return ok, err
		}
	}
}

// NetList is a Postfix network list (mynetworks): `127.0.0.0/8`,
// `[::1]/128`, `[2001:db8::]/32`, plain addresses with or without
// brackets, `/file/name` entries, `type:table` entries whose keys are
// networks or addresses, and `!` negation; the first match decides.
type NetList struct {
	pats []netPattern
}

type netPattern struct {
	neg    bool
	prefix netip.Prefix
}

// Networks reads a network list parameter, opening its files and tables.
func (c *Config) Networks(name string) (*NetList, error) {
	pats, err := c.netPatterns(name, true)
	if err != nil {
		return nil, err
	}
	return &NetList{pats: pats}, nil
}

func (c *Config) netPatterns(name string, open bool) ([]netPattern, error) {
	words, err := c.List(name)
	if err != nil {
		return nil, err
	}
	var pats []netPattern
	for _, w := range words {
		neg := strings.HasPrefix(w, "!")
		if neg {
			w = w[1:]
		}
		var entries []string
		switch {
		case strings.HasPrefix(w, "/"):
			if !open {
				continue
			}
			if entries, err = readNames(w); err != nil {
				return nil, c.errorf(name, "%v", err)
			}
		case strings.Contains(w, ":") && !strings.HasPrefix(w, "[") && !looksIPv6(w):
			if _, _, err := splitTableSpec(w); err != nil && !strings.HasPrefix(w, "cidr:") {
				return nil, c.errorf(name, "%v", err)
			}
			if !open {
				continue
			}
			if entries, err = tableKeys(w); err != nil {
				return nil, c.errorf(name, "%v", err)
			}
		default:
			entries = []string{w}
		}
		for _, e := range entries {
			p, err := parseNet(e)
			if err != nil {
				return nil, c.errorf(name, "%v", err)
			}
			pats = append(pats, netPattern{neg: neg, prefix: p})
		}
	}
	return pats, nil
}

// tableKeys returns the keys of a table file used in a network list
// (cidr:/path, hash:/path, ...): each key is a network or an address.
func tableKeys(spec string) ([]string, error) {
	_, path, _ := strings.Cut(spec, ":")
	t, err := OpenTable("texthash:" + path)
	if err != nil {
		return nil, err
	}
	return t.(interface{ Keys() []string }).Keys(), nil
}

// looksIPv6 reports whether w is an IPv6 address or prefix written without
// brackets (modern Postfix accepts `::1/128`).
func looksIPv6(w string) bool {
	a, _, _ := strings.Cut(w, "/")
	ip, err := netip.ParseAddr(a)
	return err == nil && ip.Is6()
}

// parseNet parses `addr`, `addr/len`, `[addr]` or `[addr]/len`.
func parseNet(s string) (netip.Prefix, error) {
	addr, bits, hasBits := strings.Cut(s, "/")
	if strings.HasPrefix(addr, "[") {
		if !strings.HasSuffix(addr, "]") {
			return netip.Prefix{}, fmt.Errorf("bad network %q", s)
		}
		addr = addr[1 : len(addr)-1]
	}
	ip, err := netip.ParseAddr(addr)
	if err != nil || ip.Zone() != "" {
		return netip.Prefix{}, fmt.Errorf("bad network %q", s)
	}
	if !hasBits {
		ip = ip.Unmap()
		return netip.PrefixFrom(ip, ip.BitLen()), nil
	}
	n, err := strconv.Atoi(bits)
	if err != nil || n < 0 || n > ip.BitLen() || strings.TrimLeft(bits, "0123456789") != "" {
		return netip.Prefix{}, fmt.Errorf("bad network %q", s)
	}
	if ip.Is4In6() { // [::ffff:127.0.0.0]/104 is 127.0.0.0/8
		if n < 96 {
			return netip.Prefix{}, fmt.Errorf("bad network %q", s)
		}
		ip, n = ip.Unmap(), n-96
	}
	return netip.PrefixFrom(ip, n).Masked(), nil
}

// Contains reports whether ip is in the list. IPv4-mapped IPv6 addresses
// match as IPv4.
func (n *NetList) Contains(ip netip.Addr) bool {
	if n == nil {
		return false
	}
	ip = ip.Unmap().WithZone("")
	for _, p := range n.pats {
		if p.prefix.Contains(ip) {
			return !p.neg
		}
	}
	return false
}

// defaultNetworks is Postfix's computed mynetworks default for
// mynetworks_style: host (loopback and this host's addresses), subnet (the
// networks of this host's interfaces) or class (their class A/B/C networks).
func defaultNetworks(c *Config) string {
	style := c.String("mynetworks_style")
	nets := []string{"127.0.0.0/8", "[::ffff:127.0.0.0]/104", "[::1]/128"}
	seen := map[string]bool{}
	for _, n := range nets {
		seen[n] = true
	}
	for _, ipn := range interfaceNets() {
		ip, ok := netip.AddrFromSlice(ipn.IP)
		if !ok || ip.IsLoopback() {
			continue
		}
		ip = ip.Unmap()
		ones, _ := ipn.Mask.Size()
		bits := ip.BitLen()
		switch style {
		case "subnet":
			bits = ones
		case "class":
			bits = ones
			if ip.Is4() {
				switch b := ip.As4()[0]; {
				case b < 128:
					bits = 8
				case b < 192:
					bits = 16
				default:
					bits = 24
				}
			}
		}
		p := netip.PrefixFrom(ip, bits).Masked()
		s := p.String()
		if ip.Is6() {
			s = "[" + p.Addr().String() + "]/" + fmt.Sprint(p.Bits())
		}
		if !seen[s] {
			seen[s] = true
			nets = append(nets, s)
		}
	}
	return strings.Join(nets, " ")
}

var (
	ifaceOnce sync.Once
	ifaceNets []*net.IPNet
)

// interfaceNets returns this host's interface addresses, read once.
func interfaceNets() []*net.IPNet {
	ifaceOnce.Do(func() {
		addrs, err := net.InterfaceAddrs()
		if err != nil {
			return
		}
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok && n.IP.To16() != nil && !n.IP.IsLinkLocalUnicast() {
				ifaceNets = append(ifaceNets, n)
			}
		}
	})
	return ifaceNets
}
