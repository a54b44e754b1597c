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
	h, body := readHeader(lines)
	p := &player{t: t, path: path, e: h.start(t)}
	for n, l := range lines[body:] {
		p.step(body+n+1, l)
	}
}

// header is a transcript's setup: the "@" directives before the dialog.
type header struct {
	cfgLines, seeds, records, fails, tcp []string
	tls                                  bool
}

// readHeader reads the directives up to the first dialog line, whose
// index it returns.
func readHeader(lines []string) (h header, body int) {
	for i, l := range lines {
		switch {
		case strings.HasPrefix(l, "@ "):
			h.cfgLines = append(h.cfgLines, l[2:])
		case l == "@tls":
			h.tls = true
		case strings.HasPrefix(l, "@seed "):
			h.seeds = append(h.seeds, l[6:])
		case strings.HasPrefix(l, "@dns "):
			h.records = append(h.records, l[5:])
		case strings.HasPrefix(l, "@dnsfail "):
			h.fails = append(h.fails, l[9:])
		case strings.HasPrefix(l, "@dnstcp "):
			h.tcp = append(h.tcp, l[8:])
		case l == "" || strings.HasPrefix(l, "#"):
		default:
			return h, i
		}
	}
	return h, 0
}

// start runs the DNS server and the relay the header asks for and queues
// its seed messages.
func (h header) start(t *testing.T) *env {
	cfgLines := h.cfgLines
	if len(h.records)+len(h.fails)+len(h.tcp) > 0 {
		ds := testutil.NewDNS(t, h.records...)
		for _, f := range h.fails {
			ds.Fail(f)
		}
		for _, n := range h.tcp {
			ds.Truncate(n)
		}
		cfgLines = append(cfgLines, "dns_resolver = "+ds.Addr)
	}
	var opts []envOption
	if h.tls {
		opts = append(opts, withTLS)
	}
	e := startServer(t, newConfig(t, cfgLines...), opts...)
	for _, s := range h.seeds {
		e.seed(s)
	}
	return e
}

// player plays a transcript's dialog lines against the relay.
type player struct {
	t       *testing.T
	path    string
	e       *env
	c       *client
	pending strings.Builder // consecutive C: lines, sent in one write
}

func (p *player) flush() {
	if p.pending.Len() > 0 {
		p.c.send(p.pending.String())
		p.pending.Reset()
	}
}

// step plays one dialog line (lineNo counts from 1).
func (p *player) step(lineNo int, l string) {
	t, path := p.t, p.path
	if p.c == nil && (strings.HasPrefix(l, "C:") || strings.HasPrefix(l, "S:")) {
		p.c = p.e.dial("")
	}
	switch {
	case l == "" || strings.HasPrefix(l, "#"):
	case strings.HasPrefix(l, "==="):
		if p.c != nil {
			p.flush()
		}
		p.c = p.e.dial(strings.TrimSpace(strings.TrimPrefix(l, "===")))
	case strings.HasPrefix(l, "C:"):
		p.pending.WriteString(strings.TrimPrefix(strings.TrimPrefix(l, "C:"), " ") + "\r\n")
	case strings.HasPrefix(l, "S: "):
		p.flush()
		got, err := p.c.line()
		if err != nil {
			t.Fatalf("%s:%d: want %q, read error %v", path, lineNo, l[3:], err)
		}
		if !match(l[3:], got) {
			t.Fatalf("%s:%d: reply mismatch\n want %q\n  got %q", path, lineNo, l[3:], got)
		}
	case l == "X:":
		p.flush()
		if got, err := p.c.line(); err == nil {
			t.Fatalf("%s:%d: want hang-up, got %q", path, lineNo, got)
		}
	case l == "!starttls":
		p.flush()
		p.c.startTLS()
	case strings.HasPrefix(l, "!"):
		p.flush()
		p.check(lineNo, l)
	default:
		t.Fatalf("%s:%d: bad transcript line %q", path, lineNo, l)
	}
}

// check runs a "!queued N" or "!held N" line against the store.
func (p *player) check(lineNo int, l string) {
	t, path := p.t, p.path
	switch {
	case strings.HasPrefix(l, "!queued "):
		want, _ := strconv.ParseInt(strings.TrimSpace(l[8:]), 10, 64)
		if got := p.e.queued(); got != want {
			t.Fatalf("%s:%d: store holds %d messages, want %d", path, lineNo, got, want)
		}
	case strings.HasPrefix(l, "!held "):
		want, _ := strconv.ParseInt(strings.TrimSpace(l[6:]), 10, 64)
		st, err := p.e.st.Stats()
		if err != nil || st.Hold != want {
			t.Fatalf("%s:%d: hold queue holds %d messages (%v), want %d", path, lineNo, st.Hold, err, want)
		}
	default:
		t.Fatalf("%s:%d: bad transcript line %q", path, lineNo, l)
	}
}
