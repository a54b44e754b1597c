package testutil

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"math/rand/v2"
	"net"
	"testing"
	"time"
)

// An MTA stopped while a client's STARTTLS handshake is under way: under
// -race, go-smtp's Server.Close (which stop used) raced with the
// session's switch to the TLS connection in every run of 300 stops;
// stop now closes the connections itself.
func TestMTAStopDuringStartTLS(t *testing.T) {
	for i := range 300 {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			m := NewMTA(t, MTAOptions{TLS: true})
			c, err := net.Dial("tcp", m.Addr)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { c.Close() })
			r := bufio.NewReader(c)
			for _, cmd := range []string{"", "EHLO client.test", "STARTTLS"} {
				if cmd != "" {
					fmt.Fprintf(c, "%s\r\n", cmd)
				}
				for { // a reply, to its last line
					l, err := r.ReadString('\n')
					if err != nil {
						t.Fatal(err)
					}
					if len(l) < 4 || l[3] == ' ' {
						break
					}
				}
			}
			go func() {
				tc := tls.Client(c, &tls.Config{InsecureSkipVerify: true})
				if tc.Handshake() == nil {
					fmt.Fprintf(tc, "EHLO client.test\r\n")
				}
			}()
			// What is tested: the cleanup's stop at a random moment of
			// the handshake.
			time.Sleep(time.Duration(rand.IntN(3000)) * time.Microsecond)
		})
	}
}
