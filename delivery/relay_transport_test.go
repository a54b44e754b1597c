package delivery

import (
	"fmt"
	"testing"
	"time"

	"github.com/holdfast-mta/holdfast/internal/testutil"
	"github.com/holdfast-mta/holdfast/store"
)

// relay_domains recipients without a transport map entry resolve to
// relay_transport, the others to default_transport; a map entry wins.
func TestResolveRelayTransport(t *testing.T) {
	c := testutil.Config(t, "relay_domains", "relay.test, parent.test",
		"transport_maps", "inline:{mapped.relay.test=etrn-only:[mx.mapped.test]}",
		"relay_destination_concurrency_limit", "3", "defer_transports", "etrn-only")
	o, err := OptionsFromConfig(c)
	if err != nil {
		t.Fatal(err)
	}
	if o.RelayTransport != "relay" || o.DestinationLimit("relay") != 3 || o.DestinationLimit("smtp") != 20 {
		t.Fatalf("relay transport %q, limits relay %d smtp %d", o.RelayTransport, o.DestinationLimit("relay"), o.DestinationLimit("smtp"))
	}
	d := &Scheduler{o: o}
	for _, tc := range []struct{ addr, key string }{
		{"a@relay.test", "relay:relay.test"},
		{"a@sub.parent.test", "relay:sub.parent.test"}, // parent_domain_matches_subdomains
		{"a@mapped.relay.test", "etrn-only:[mx.mapped.test]"},
		{"a@elsewhere.test", "smtp:elsewhere.test"},
	} {
		rt, err := d.resolve(tc.addr)
		if err != nil || rt.Kind != routeSMTP || rt.Hop.Key() != tc.key {
			t.Errorf("%s: %+v %v, want %s", tc.addr, rt, err, tc.key)
		}
	}
	// A next hop in relay_transport overrides relayhost; relayhost still
	// applies to default_transport without one.
	c.Set("relay_transport", "relay:[gw.test]:2525")
	c.Set("relayhost", "[smarthost.test]")
	if o, err = OptionsFromConfig(c); err != nil {
		t.Fatal(err)
	}
	d = &Scheduler{o: o}
	for _, tc := range []struct{ addr, key string }{
		{"a@relay.test", "relay:[gw.test]:2525"},
		{"a@elsewhere.test", "smtp:[smarthost.test]"},
	} {
		if rt, err := d.resolve(tc.addr); err != nil || rt.Hop.Key() != tc.key {
			t.Errorf("%s: %+v %v, want %s", tc.addr, rt, err, tc.key)
		}
	}
}

// relayEnv: relay.test is a relay domain without a map entry, delivered
// through relay_transport to the customer MTA; other.test (not a relay
// domain) goes through default_transport to the same MTA.
func relayEnv(t *testing.T, tweak func(e *env)) *env {
	return newEnv(t, func(e *env) {
		rd, err := testutil.Config(t, "relay_domains", "relay.test").Domains("relay_domains")
		if err != nil {
			t.Fatal(err)
		}
		e.o.RelayDomains = rd
		e.o.RelayTransport = fmt.Sprintf("relay:[127.0.0.1]:%d", e.mta.Port)
		e.o.DefaultTransport = fmt.Sprintf("smtp:[127.0.0.1]:%d", e.mta.Port)
		if tweak != nil {
			tweak(e)
		}
	})
}

// defer_transports listing relay_transport holds relay_domains mail for
// a flush, and only that mail.
func TestDeferRelayTransport(t *testing.T) {
	e := relayEnv(t, func(e *env) { e.o.DeferTransports = []string{"relay"} })
	held := e.enqueue("alice@origin.test", "a@relay.test")
	sent := e.enqueue("alice@origin.test", "b@other.test")
	e.waitGone(sent)
	m := e.waitAttempts(held, 1)
	if r := m.Recipients[0]; r.Reply != "deferred transport" || r.DSN != "4.3.2" {
		t.Fatalf("relay.test recipient: %+v", r)
	}
	if got := e.mta.Messages(); len(got) != 1 || got[0].To[0] != "b@other.test" {
		t.Fatalf("received %+v", got)
	}
	if _, err := e.s.Flush("relay.test", false); err != nil {
		t.Fatal(err)
	}
	e.d.Wake()
	e.waitGone(held)
	if got := e.mta.Wait(2, 5*time.Second); len(got) != 2 || got[1].To[0] != "a@relay.test" {
		t.Fatalf("after flush received %+v", got)
	}
}

// <relay_transport>_destination_concurrency_limit bounds the sessions of
// relay_domains mail; default_transport mail keeps its own limit.
func TestRelayTransportConcurrency(t *testing.T) {
	e := relayEnv(t, func(e *env) {
		c := testutil.Config(t, "relay_destination_concurrency_limit", "1")
		o, err := OptionsFromConfig(c)
		if err != nil {
			t.Fatal(err)
		}
		e.o.DestinationLimit = o.DestinationLimit
	})
	e.mta.Delay(30 * time.Millisecond)
	var ids []store.ID
	for i := 0; i < 8; i++ {
		ids = append(ids, e.enqueue("alice@origin.test", fmt.Sprintf("u%d@relay.test", i)))
	}
	for _, id := range ids {
		e.waitGone(id)
	}
	if n := e.mta.MaxOpen(); n != 1 {
		t.Fatalf("relay transport: %d sessions at once, limit 1", n)
	}
	e.mta.Reset()
	ids = ids[:0]
	for i := 0; i < 8; i++ {
		ids = append(ids, e.enqueue("alice@origin.test", fmt.Sprintf("u%d@other.test", i)))
	}
	for _, id := range ids {
		e.waitGone(id)
	}
	if n := e.mta.MaxOpen(); n < 2 {
		t.Fatalf("smtp transport: %d sessions at once, want more than relay's 1", n)
	}
}
