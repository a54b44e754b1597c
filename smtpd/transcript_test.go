package smtpd

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/holdfast-mta/holdfast/internal/testutil"
)

// TestTranscripts runs every testdata/*.txt dialog against a real
// listener and store. Format (one directive per line):
//
//	# comment
//	@ name = value   main.cf line added to the test configuration
//	@tls             offer STARTTLS with a generated test certificate
//	@seed ADDR       queue one message for ADDR before the dialog
//	@dns RR          a record (zone-file syntax) served by a miekg/dns
//	                 server on loopback, which dns_resolver points at
//	@dnsfail NAME    that server answers SERVFAIL for NAME ("x.test.")
//	@dnstcp NAME     its UDP answers for NAME are truncated: asked again
//	                 over TCP
//	=== [ADDR]       start a new session (from local address ADDR)
//	C: line          client line; consecutive C: lines go in one write
//	S: line          expected reply line; a trailing '*' matches the rest
//	X:               the server hangs up
//	!starttls        client side of the TLS handshake
//	!queued N        the store holds N messages
//	!held N          N of them are in the hold queue
func TestTranscripts(t *testing.T) {
	files, err := filepath.Glob("testdata/*.txt")
	if err != nil || len(files) == 0 {
		t.Fatalf("no transcripts: %v", err)
	}
	for _, f := range files {
		t.Run(strings.TrimSuffix(filepath.Base(f), ".txt"), func(t *testing.T) {
			t.Parallel()
			runTranscript(t, f)
		})
	}
}

func runTranscript(t *testing.T, path string) {
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
	var cfgLines, seeds, records, fails, tcp []string
	tlsOn := false
	body := 0
	for i, l := range lines {
		switch {
		case strings.HasPrefix(l, "@ "):
			cfgLines = append(cfgLines, l[2:])
		case l == "@tls":
			tlsOn = true
		case strings.HasPrefix(l, "@seed "):
			seeds = append(seeds, l[6:])
		case strings.HasPrefix(l, "@dns "):
			records = append(records, l[5:])
		case strings.HasPrefix(l, "@dnsfail "):
			fails = append(fails, l[9:])
		case strings.HasPrefix(l, "@dnstcp "):
			tcp = append(tcp, l[8:])
		case l == "" || strings.HasPrefix(l, "#"):
		default:
			body = i
		}
		if body != 0 {
			break
		}
	}
	if len(records)+len(fails)+len(tcp) > 0 {
		ds := testutil.NewDNS(t, records...)
		for _, f := range fails {
			ds.Fail(f)
		}
		for _, n := range tcp {
			ds.Truncate(n)
		}
		cfgLines = append(cfgLines, "dns_resolver = "+ds.Addr)
	}
	var opts []envOption
	if tlsOn {
		opts = append(opts, withTLS)
	}
	e := startServer(t, newConfig(t, cfgLines...), opts...)
	for _, s := range seeds {
		e.seed(s)
	}
	var c *client
	var pending strings.Builder
	flushPending := func() {
		if pending.Len() > 0 {
			c.send(pending.String())
			pending.Reset()
		}
	}
	for n, l := range lines[body:] {
		lineNo := body + n + 1
		if c == nil && (strings.HasPrefix(l, "C:") || strings.HasPrefix(l, "S:")) {
			c = e.dial("")
		}
		switch {
		case l == "" || strings.HasPrefix(l, "#"):
		case strings.HasPrefix(l, "==="):
			if c != nil {
				flushPending()
			}
			c = e.dial(strings.TrimSpace(strings.TrimPrefix(l, "===")))
		case strings.HasPrefix(l, "C:"):
			pending.WriteString(strings.TrimPrefix(strings.TrimPrefix(l, "C:"), " ") + "\r\n")
		case strings.HasPrefix(l, "S: "):
			flushPending()
			got, err := c.line()
			if err != nil {
				t.Fatalf("%s:%d: want %q, read error %v", path, lineNo, l[3:], err)
			}
			if !match(l[3:], got) {
				t.Fatalf("%s:%d: reply mismatch\n want %q\n  got %q", path, lineNo, l[3:], got)
			}
		case l == "X:":
			flushPending()
			if got, err := c.line(); err == nil {
				t.Fatalf("%s:%d: want hang-up, got %q", path, lineNo, got)
			}
		case l == "!starttls":
			flushPending()
			c.startTLS()
		case strings.HasPrefix(l, "!queued "):
			flushPending()
			want, _ := strconv.ParseInt(strings.TrimSpace(l[8:]), 10, 64)
			if got := e.queued(); got != want {
				t.Fatalf("%s:%d: store holds %d messages, want %d", path, lineNo, got, want)
			}
		case strings.HasPrefix(l, "!held "):
			flushPending()
			want, _ := strconv.ParseInt(strings.TrimSpace(l[6:]), 10, 64)
			st, err := e.st.Stats()
			if err != nil || st.Hold != want {
				t.Fatalf("%s:%d: hold queue holds %d messages (%v), want %d", path, lineNo, st.Hold, err, want)
			}
		default:
			t.Fatalf("%s:%d: bad transcript line %q", path, lineNo, l)
		}
	}
}
