package main

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/holdfast-mta/holdfast/config"
)

// self knows the addresses holdfast receives mail on, so that delivery
// can tell a next hop that is holdfast itself (a mail loop, Postfix's
// smtp_find_self): the smtpd_listen sockets, with a wildcard listener
// standing for every address of the machine's interfaces, and
// proxy_interfaces (addresses of a proxy or NAT that forwards to us, any
// port).
type self struct {
	listen []netip.AddrPort
	local  map[netip.Addr]bool // interface addresses, for wildcard listeners
	proxy  map[netip.Addr]bool
}

// newSelf builds the set from the bound listeners and proxy_interfaces
// (addresses or host names, resolved once here).
func newSelf(c *config.Config, ls []net.Listener) (*self, error) {
	s := &self{local: map[netip.Addr]bool{}, proxy: map[netip.Addr]bool{}}
	for _, l := range ls {
		if ta, ok := l.Addr().(*net.TCPAddr); ok {
			ap := ta.AddrPort()
			s.listen = append(s.listen, netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()))
		}
	}
	if addrs, err := net.InterfaceAddrs(); err == nil {
		for _, a := range addrs {
			if p, err := netip.ParsePrefix(a.String()); err == nil {
				s.local[p.Addr().Unmap()] = true
			}
		}
	}
	names, err := c.List("proxy_interfaces")
	if err != nil {
		return nil, err
	}
	for _, n := range names {
		if a, err := netip.ParseAddr(n); err == nil {
			s.proxy[a.Unmap()] = true
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		as, err := net.DefaultResolver.LookupNetIP(ctx, "ip", n)
		cancel()
		if err != nil {
			return nil, &config.Error{Param: "proxy_interfaces", Msg: fmt.Sprintf("%s: %v", n, err)}
		}
		for _, a := range as {
			s.proxy[a.Unmap()] = true
		}
	}
	return s, nil
}

// Is reports whether a is an address holdfast receives mail on.
func (s *self) Is(a netip.AddrPort) bool {
	ip := a.Addr().Unmap()
	if s.proxy[ip] {
		return true
	}
	for _, l := range s.listen {
		if l.Port() != a.Port() {
			continue
		}
		if l.Addr() == ip || l.Addr().IsUnspecified() && (ip.IsLoopback() || s.local[ip]) {
			return true
		}
	}
	return false
}
