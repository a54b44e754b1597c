package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/holdfast-mta/holdfast/control"
	"github.com/holdfast-mta/holdfast/internal/testutil"
)

// Internationalised domains (issue 12): `café.test` and its A-label
// `xn--caf-dma.test` are one destination for relay control, the transport
// table, the flush index, ETRN and `holdfast flush`, whichever form the
// configuration, the mail and the request use. Each case starts the
// daemon with the client outside mynetworks (so relay_domains decides),
// sends one SMTPUTF8 message to u@café.test and one ASCII message to
// u@xn--caf-dma.test, both deferred by the ETRN-only transport, and one
// flush request in one form delivers both to a go-smtp server with
// SMTPUTF8.
func TestIDNOneDestination(t *testing.T) {
	const u, a = "café.test", "xn--caf-dma.test"
	for _, tc := range []struct {
		relay, fastFlush, transport, flush string
		cli                                bool // holdfast flush (control socket) instead of ETRN
	}{
		{relay: u, transport: a, flush: u},
		{relay: a, transport: u, flush: u},
		{relay: u, fastFlush: a, transport: u, flush: a},
		{relay: a, fastFlush: u, transport: a, flush: a},
		{relay: a, fastFlush: u, transport: u, flush: u, cli: true},
		{relay: u, transport: a, flush: a, cli: true},
	} {
		// The name becomes part of t.TempDir(), which the configuration
		// names: no commas or spaces in it.
		name := fmt.Sprintf("relay_%s/fast_flush_%s/transport_%s/flush_%s/cli_%t", tc.relay, tc.fastFlush, tc.transport, tc.flush, tc.cli)
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			mta := testutil.NewMTA(t, testutil.MTAOptions{SMTPUTF8: true})
			tpath := filepath.Join(dir, "idn-transport")
			line := fmt.Sprintf("%s etrn-only:[%s]:%d\n", tc.transport, mta.Host, mta.Port)
			if err := os.WriteFile(tpath, []byte(line), 0o600); err != nil {
				t.Fatal(err)
			}
			sock := filepath.Join(dir, "c.sock")
			extra := []string{
				"mynetworks = 127.0.0.2/32", // 127.0.0.1 is a stranger
				"smtpd_etrn_restrictions =",
				"relay_domains = " + tc.relay,
				"transport_maps = texthash:" + tpath,
				"control_socket = " + sock,
			}
			if tc.fastFlush != "" {
				extra = append(extra, "fast_flush_domains = "+tc.fastFlush)
			}
			r := startRelay(t, dir, mta, extra...)

			c := r.dial()
			if l := c.lines("EHLO client.test"); !slices.Contains(l, "250-SMTPUTF8") {
				t.Fatalf("EHLO: %q", l)
			}
			// Relay control: other IDN names and routed forms are refused.
			c.expect("250 2.1.0 Ok", "MAIL FROM:<a@sender.test> SMTPUTF8")
			for _, rc := range []string{"u@bücher.test", "u@xn--bcher-kva.test", "u%x.test@café.test", "x.test!u@xn--caf-dma.test", `"u@x.test"@café.test`} {
				// Postfix's default defer_unauth_destination: 454 4.7.1.
				if got, want := c.cmd("RCPT TO:<%s>", rc), "454 4.7.1 <"+rc+">: Relay access denied"; got != want {
					t.Errorf("RCPT TO:<%s>: %q, want %q", rc, got, want)
				}
			}
			c.expect("250 2.1.5 Ok", "RCPT TO:<u@CAFÉ.test>")
			c.expect("354 End data with <CR><LF>.<CR><LF>", "DATA")
			if got := c.cmd("Subject: utf8\r\n\r\nhello\r\n."); !strings.HasPrefix(got, "250 2.0.0 Ok: queued as ") {
				t.Fatalf("end of DATA: %q", got)
			}
			c.expect("250 2.1.0 Ok", "MAIL FROM:<a@sender.test>")
			c.expect("250 2.1.5 Ok", "RCPT TO:<u@XN--CAF-DMA.test>")
			c.expect("354 End data with <CR><LF>.<CR><LF>", "DATA")
			if got := c.cmd("Subject: ascii\r\n\r\nhello\r\n."); !strings.HasPrefix(got, "250 2.0.0 Ok: queued as ") {
				t.Fatalf("end of DATA: %q", got)
			}
			c.cmd("QUIT")
			r.waitDeferred(2)
			r.check()
			r.quiet(200 * time.Millisecond) // defer_transports held both

			if tc.cli {
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				defer cancel()
				st, err := control.NewClient(sock).Flush(ctx, control.FlushRequest{Site: tc.flush, Wait: true, WaitFor: 15 * time.Second}, nil)
				if err != nil || st.Messages != 2 || st.Delivered != 2 {
					t.Fatalf("holdfast flush %s: %+v, %v", tc.flush, st, err)
				}
			} else if got := r.etrn(tc.flush); got != "250 Queuing started" {
				t.Fatalf("ETRN %s: %q", tc.flush, got)
			}
			var to []string
			for _, m := range mta.Wait(2, 10*time.Second) {
				to = append(to, m.To...)
			}
			slices.Sort(to)
			if want := []string{"u@café.test", "u@xn--caf-dma.test"}; !slices.Equal(to, want) {
				t.Errorf("delivered to %q, want %q", to, want)
			}
			r.waitEmpty()
			r.check()
		})
	}
}
