package listener

import (
	"net"
	"net/netip"
)

// RemoteIP is the peer address of c without an IPv4-in-IPv6 mapping, or
// the zero Addr when c's peer has no IP address (a pipe, a Unix socket).
// The SMTP and ODMR servers key their per-client limits and checks on it.
func RemoteIP(c net.Conn) netip.Addr {
	if ta, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		if a, ok := netip.AddrFromSlice(ta.IP); ok {
			return a.Unmap()
		}
	}
	if c.RemoteAddr() == nil {
		return netip.Addr{}
	}
	host, _, err := net.SplitHostPort(c.RemoteAddr().String())
	if err == nil {
		if a, err := netip.ParseAddr(host); err == nil {
			return a.Unmap()
		}
	}
	return netip.Addr{}
}
