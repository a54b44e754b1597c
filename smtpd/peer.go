package smtpd

import (
	"context"
	"net/netip"
	"slices"

	"github.com/holdfast-mta/holdfast/dnsr"
	"github.com/holdfast-mta/holdfast/internal/addr"
)

// Peer name status, as Postfix's smtpd_peer.c sets name_status and
// reverse_name_status.
type peerStatus int

const (
	peerOK     peerStatus = 2 // address -> name (and name -> address) found
	peerTemp   peerStatus = 4 // a lookup failed temporarily
	peerPerm   peerStatus = 5 // no name, or an invalid one
	peerForged peerStatus = 6 // the name does not resolve to the address
)

// lookupPeer finds the client's names as Postfix does: reverse_name is
// the address's name (PTR, /etc/hosts first); name is that name only if
// it resolves back to the address (forward confirmation), else
// "unknown". With smtpd_peername_lookup = no both are "unknown".
func (s *session) lookupPeer() {
	s.name, s.reverseName = "unknown", "unknown"
	s.nameStatus, s.reverseStatus = peerPerm, peerPerm
	r := s.cfg.resolver
	if !s.cfg.opts.PeernameLookup || r == nil || !s.client.IsValid() {
		return
	}
	// The lookups hold a slot before the greeting: at most smtpd_timeout
	// (10 s under stress), like a request.
	ctx, cancel := context.WithTimeout(context.Background(), min(dnsTimeout, s.io.lim.Timeout))
	defer cancel()
	name, err := r.AddrName(ctx, s.client)
	if err == nil && !addr.ValidHostname(name) {
		err = &dnsr.Error{Name: name, Type: "PTR", Kind: dnsr.NXDomain} // numeric or malformed
	}
	if err != nil {
		if dnsr.IsTemporary(err) {
			s.nameStatus, s.reverseStatus = peerTemp, peerTemp
		}
		return
	}
	s.reverseName, s.reverseStatus = name, peerOK
	addrs, err := r.HostAddrs(ctx, name)
	switch {
	case err != nil && dnsr.IsTemporary(err):
		s.nameStatus = peerTemp
		s.log.Warn().Str("name", name).Msgf("hostname %s does not resolve to address %s: %v", name, s.client, err)
	case err != nil || !slices.Contains(addrs, s.client.Unmap()):
		s.nameStatus = peerForged
		s.log.Warn().Str("name", name).Msgf("hostname %s does not resolve to address %s", name, s.client)
	default:
		s.name, s.nameStatus = name, peerOK
	}
}

// newNamaddr is Postfix's name[addr] for logs and client replies.
func newNamaddr(name string, a netip.Addr) string { return name + "[" + a.String() + "]" }
