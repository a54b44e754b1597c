package delivery

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/holdfast-mta/holdfast/store"
)

// A next hop at one of our own addresses is a loop: deferred with
// Postfix's text, without a connection.
func TestLoopOwnAddress(t *testing.T) {
	e := newEnv(t, func(e *env) {
		own := netip.MustParseAddrPort(fmt.Sprintf("127.0.0.1:%d", e.mta.Port))
		e.o.Self = func(a netip.AddrPort) bool { return a == own }
	})
	id := e.enqueue("alice@origin.test", "bob@customer.test")
	m := e.waitAttempts(id, 1)
	want := fmt.Sprintf("mail for [127.0.0.1]:%d loops back to myself", e.mta.Port)
	if r := m.Recipients[0]; r.State != store.RcptPending || r.DSN != "4.4.6" || r.Reply != want {
		t.Fatalf("%+v, want deferred 4.4.6 %q", r, want)
	}
	if n := e.mta.Conns(); n != 0 {
		t.Errorf("%d connections to ourselves", n)
	}
}

// A next hop that greets with our own myhostname is a loop (Postfix's
// smtp_helo.c): deferred with the same text.
func TestLoopGreetsWithMyHostname(t *testing.T) {
	h := newHostile(t, func(c net.Conn, w io.Writer) {
		io.WriteString(w, "220 RELAY.test ESMTP holdfast\r\n")
		bufio.NewReader(c).ReadString('\n')
	})
	e := newEnv(t, func(e *env) { e.tm["hostile.test"] = "smtp:" + h.ln.Addr().String() })
	id := e.enqueue("alice@origin.test", "bob@hostile.test")
	m := e.waitAttempts(id, 1)
	_, port, _ := net.SplitHostPort(h.ln.Addr().String())
	want := "mail for [127.0.0.1]:" + port + " loops back to myself"
	if r := m.Recipients[0]; r.State != store.RcptPending || r.DSN != "4.4.6" || r.Reply != want {
		t.Fatalf("%+v, want deferred 4.4.6 %q", r, want)
	}
}

// A next hop that answers EHLO with our own myhostname is a loop too.
func TestLoopEHLOWithMyHostname(t *testing.T) {
	h := newHostile(t, func(c net.Conn, w io.Writer) {
		r := bufio.NewReader(c)
		io.WriteString(w, "220 mx.other.test ESMTP\r\n")
		r.ReadString('\n')
		io.WriteString(w, "250-relay.test Hello\r\n250 PIPELINING\r\n")
		r.ReadString('\n')
	})
	e := newEnv(t, func(e *env) { e.tm["hostile.test"] = "smtp:" + h.ln.Addr().String() })
	id := e.enqueue("alice@origin.test", "bob@hostile.test")
	m := e.waitAttempts(id, 1)
	_, port, _ := net.SplitHostPort(h.ln.Addr().String())
	want := "mail for [127.0.0.1]:" + port + " loops back to myself"
	if r := m.Recipients[0]; r.State != store.RcptPending || r.DSN != "4.4.6" || r.Reply != want {
		t.Fatalf("%+v, want deferred 4.4.6 %q", r, want)
	}
	if !strings.Contains(e.logs.String(), "replied to HELO/EHLO with my own hostname relay.test") {
		t.Errorf("log: %s", e.logs.String())
	}
}
