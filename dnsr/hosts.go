package dnsr

import (
	"bufio"
	"context"
	"net/netip"
	"os"
	"strings"
)

// hosts is /etc/hosts, read once: the system resolver (getnameinfo,
// getaddrinfo) consults it before the DNS, and so does Postfix's client
// name lookup; 127.0.0.1 is "localhost" without a DNS question.
type hosts struct {
	names map[netip.Addr][]string // address -> names, file order
	addrs map[string][]netip.Addr // lower-case name -> addresses
}

func readHosts(file string) *hosts {
	h := &hosts{names: map[netip.Addr][]string{}, addrs: map[string][]netip.Addr{}}
	f, err := os.Open(file)
	if err != nil {
		return h // no hosts file: DNS only
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line, _, _ := strings.Cut(sc.Text(), "#")
		fields := strings.Fields(line)
		if len(fields) < 2 {
			continue
		}
		a, err := netip.ParseAddr(fields[0])
		if err != nil {
			continue
		}
		a = a.Unmap()
		for _, n := range fields[1:] {
			n = strings.ToLower(strings.TrimSuffix(n, "."))
			h.names[a] = append(h.names[a], n)
			h.addrs[n] = append(h.addrs[n], a)
		}
	}
	return h
}

// AddrName returns the name of an address as the system resolver's
// getnameinfo would: the first name /etc/hosts gives it, else the first
// PTR record. With the system's name servers a loopback address is
// never asked about.
func (r *Resolver) AddrName(ctx context.Context, a netip.Addr) (string, error) {
	if n := r.hosts.names[a.Unmap()]; len(n) > 0 {
		return n[0], nil
	}
	if r.system && a.IsLoopback() {
		// RFC 6761 sec 6.3: loopback names are not sent to the
		// network's name servers; an address /etc/hosts does not name
		// has no name.
		return "", &Error{Name: a.String(), Type: "PTR", Kind: NXDomain}
	}
	names, err := r.LookupPTR(ctx, a)
	if err != nil {
		return "", err
	}
	return names[0], nil
}

// HostAddrs returns the addresses of a host name as getaddrinfo would:
// from /etc/hosts when it lists the name, else IPv4 and IPv6 from the DNS.
func (r *Resolver) HostAddrs(ctx context.Context, name string) ([]netip.Addr, error) {
	if a := r.hosts.addrs[strings.ToLower(strings.TrimSuffix(name, "."))]; len(a) > 0 {
		return append([]netip.Addr(nil), a...), nil
	}
	return r.LookupIP(ctx, name)
}
