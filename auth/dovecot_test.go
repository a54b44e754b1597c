package auth

import (
	"bufio"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// scripted is a Unix socket peer that answers the handshake with hello
// and every AUTH with reply: the failures a real Dovecot is hard to
// bring to (temporary errors, a wrong protocol, garbage).
func scripted(t *testing.T, hello, reply string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "hfsc")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "auth")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(5 * time.Second))
				c.Write([]byte(hello))
				r := bufio.NewReader(c)
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					if strings.HasPrefix(line, "AUTH\t") {
						c.Write([]byte(reply))
					}
				}
			}()
		}
	}()
	return path
}

const hello = "VERSION\t1\t2\nMECH\tPLAIN\tplaintext\nMECH\tSECRET\tprivate\nSPID\t1\nCUID\t1\nDONE\n"

func TestDovecotFailures(t *testing.T) {
	for _, c := range []struct {
		name, hello, reply string
		temp               bool
		reason             string
	}{
		{"temp", hello, "FAIL\t1\ttemp\treason=backend down\n", true, "backend down"},
		{"reason", hello, "FAIL\t1\tuser=alice\treason=Password expired\n", false, "Password expired"},
		{"ok without user", hello, "OK\t1\n", false, "Authentication backend error"},
		{"only a reply to another request", hello, "OK\t7\tuser=mallory\n", true, "Connection lost to authentication server"},
		{"garbage", hello, strings.Repeat("x", 20000) + "\n", true, "Connection lost to authentication server"},
		{"version 2", "VERSION\t2\t0\nMECH\tPLAIN\nDONE\n", "", true, "Can't connect to authentication server"},
		{"auth-master socket", "VERSION\t1\t2\nSPID\t1\nDONE\n", "", true, "Can't connect to authentication server"},
	} {
		t.Run(c.name, func(t *testing.T) {
			d := NewDovecot(scripted(t, c.hello, c.reply))
			d.Timeout = 500 * time.Millisecond
			var f *Failure
			x, err := d.Start("PLAIN", Info{})
			if err == nil {
				defer x.Close()
				_, _, err = x.Step(b64("\x00alice\x00pw"), true)
			}
			if !errors.As(err, &f) || f.Temp != c.temp || f.Reason != c.reason {
				t.Errorf("got %v (%+v), want temp=%v %q", err, f, c.temp, c.reason)
			}
		})
	}
	// Private mechanisms are not offered; client data that would break
	// the protocol line is refused before it is sent.
	d := NewDovecot(scripted(t, hello, "OK\t1\tuser=alice\n"))
	if m, _ := d.Mechanisms(); len(m) != 1 || m[0].Name != "PLAIN" {
		t.Errorf("mechanisms %+v", m)
	}
	x, err := d.Start("PLAIN", Info{})
	if err != nil {
		t.Fatal(err)
	}
	defer x.Close()
	if _, _, err := x.Step("AAAA\tresp=x", true); !errors.Is(err, ErrMalformed) {
		t.Errorf("TAB in a response: %v", err)
	}
}
