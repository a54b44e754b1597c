package smtpd

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/holdfast-mta/holdfast/config"
	"github.com/holdfast-mta/holdfast/flush"
	"github.com/holdfast-mta/holdfast/internal/addr"
	"github.com/holdfast-mta/holdfast/store"
)

var replyLine = regexp.MustCompile(`^[2-5][0-9][0-9][ -][^\r\n]*\r\n$`)

// FuzzSession feeds arbitrary bytes as a client's whole input to a
// session, in memory: the connection reads the input then EOF and
// collects the replies (no network round trip, no fsync), and the queue
// keeps content in memory. The first byte picks smtpd_forbid_bare_newline
// (normalize, reject, no). Every output line must be a well-formed
// reply, the first the greeting; every queued content has CRLF line ends
// only and fits message_size_limit.
func FuzzSession(f *testing.F) {
	f.Add([]byte("\x00EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<u@customer.test>\r\nDATA\r\nhi\r\n.\r\nETRN customer.test\r\nQUIT\r\n"))
	f.Add([]byte("\x01HELO c\r\nETRN @customer.test\r\nETRN #x\r\nSTARTTLS\r\nVRFY <\"a b\"@c.test>\r\nRSET\r\n"))
	f.Add([]byte("\x00EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<u@customer.test>\r\nBDAT 7\r\nhello\r.BDAT 3 LAST\r\n\n.\r\nQUIT\r\n"))
	// AUTH (the passwd-file has alice:{PLAIN}secret).
	f.Add([]byte("\x00EHLO c\r\nAUTH PLAIN AGFsaWNlAHNlY3JldA==\r\nAUTH LOGIN\r\nMAIL FROM:<a@b.test> AUTH=<>\r\nRCPT TO:<u@x.test>\r\nQUIT\r\n"))
	f.Add([]byte("\x01EHLO c\r\nAUTH LOGIN\r\nYWxpY2U=\r\n*\r\nAUTH CRAM-MD5\r\nYWxpY2UgMDA=\r\nAUTH PLAIN\r\n!!\r\n"))
	f.Add([]byte("\x02EHLO c\nMAIL FROM:<a@b.test>\r\nRCPT TO:<u@customer.test>\r\nDATA\r\nhello\r.\rMAIL FROM:<x@evil.test>\r\n.\n.\r\n"))
	var srvs []*Server
	q := &memQueue{t: f, limit: 4096}
	for _, mode := range []string{"normalize", "reject", "no"} {
		c, err := config.Parse("fuzz.cf", []byte("myhostname = relay.test\nmynetworks = 127.0.0.0/8\nrelay_domains = customer.test\n"+
			"smtpd_error_sleep_time = 0\nsmtpd_timeout = 2s\nmessage_size_limit = 4096\nsmtpd_forbid_unauth_pipelining = no\n"+
			"smtpd_peername_lookup = no\nsmtpd_forbid_bare_newline_exclusions =\nsmtpd_forbid_bare_newline = "+mode+"\n"+
			"smtpd_sasl_auth_enable = yes\nsmtpd_sasl_type = passwd-file\nsmtpd_sasl_path = testdata/auth_passwd\n"))
		if err != nil {
			f.Fatal(err)
		}
		opts, err := OptionsFromConfig(c)
		if err != nil {
			f.Fatal(err)
		}
		pol, err := flush.New(c)
		if err != nil {
			f.Fatal(err)
		}
		// ETRN needs a real flush service; it is the only use of the store.
		st, err := store.Open(filepath.Join(f.TempDir(), "q.db"), store.Options{NoSync: true, Eligible: pol.Eligible, PolicyKey: pol.Key()})
		if err != nil {
			f.Fatal(err)
		}
		f.Cleanup(func() { st.Close() })
		srv, err := New(opts, q, flush.NewService(pol, st, &waker{}, zerolog.Nop()), zerolog.Nop())
		if err != nil {
			f.Fatal(err)
		}
		srvs = append(srvs, srv)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) == 0 {
			return
		}
		srv := srvs[int(in[0])%len(srvs)]
		conn := &memConn{r: bytes.NewReader(in[1:])}
		srv.handle(conn)
		out := conn.out.String()
		first := true
		for out != "" {
			i := strings.Index(out, "\r\n")
			if i < 0 {
				t.Fatalf("reply without CRLF: %q", out)
			}
			l := out[:i+2]
			out = out[i+2:]
			if !replyLine.MatchString(l) {
				t.Fatalf("malformed reply line %q", l)
			}
			if first && l != "220 relay.test ESMTP holdfast\r\n" {
				t.Fatalf("greeting %q", l)
			}
			first = false
		}
	})
}

// memConn is a client connection in memory: reads come from r (then
// EOF), writes go to out; deadlines do nothing (reads never block).
type memConn struct {
	r   *bytes.Reader
	out bytes.Buffer
}

func (c *memConn) Read(p []byte) (int, error)       { return c.r.Read(p) }
func (c *memConn) Write(p []byte) (int, error)      { return c.out.Write(p) }
func (c *memConn) Close() error                     { return nil }
func (c *memConn) LocalAddr() net.Addr              { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 25} }
func (c *memConn) RemoteAddr() net.Addr             { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000} }
func (c *memConn) SetDeadline(time.Time) error      { return nil }
func (c *memConn) SetReadDeadline(time.Time) error  { return nil }
func (c *memConn) SetWriteDeadline(time.Time) error { return nil }

// memQueue is a Queue in memory for the fuzzer: Enqueue checks what a
// session hands over (CRLF line ends only, within the size limit).
type memQueue struct {
	t     testing.TB
	limit int64 // message_size_limit (the content after our Received:)
}

func (q *memQueue) Spool(id store.ID) (store.Content, error) {
	return &memContent{q: q}, nil
}

type memContent struct {
	q    *memQueue
	b    bytes.Buffer
	done bool
}

func (c *memContent) Write(p []byte) (int, error) { return c.b.Write(p) }
func (c *memContent) Abort()                      { c.done = true }

func (c *memContent) Enqueue(m *store.Message) error {
	if c.done {
		return errors.New("enqueue after abort")
	}
	c.done = true
	b := c.b.Bytes()
	if i := bareNewline(b); i >= 0 {
		return fmt.Errorf("queued content has a bare CR or LF at %d: %q", i, b)
	}
	// Our Received: header is well under 1 KB.
	if c.q.limit > 0 && int64(len(b)) > c.q.limit+1024 {
		return fmt.Errorf("queued content of %d bytes over the limit %d", len(b), c.q.limit)
	}
	if len(m.Recipients) == 0 {
		return errors.New("queued without recipients")
	}
	return nil
}

// bareNewline returns the index of the first CR not followed by LF or
// LF not preceded by CR, or -1.
func bareNewline(b []byte) int {
	for i, c := range b {
		switch {
		case c == '\r' && (i+1 == len(b) || b[i+1] != '\n'):
			return i
		case c == '\n' && (i == 0 || b[i-1] != '\r'):
			return i
		}
	}
	return -1
}

// FuzzContent drives the DATA reader (readData, with the first input
// byte choosing smtpd_forbid_bare_newline) and the BDAT path (content
// written in pieces cut at the positions the input gives). What is
// stored has CRLF line ends only; DATA ends only at <CR><LF>.<CR><LF>
// unless the mode is no; and BDAT content does not depend on where the
// chunks were cut.
func FuzzContent(f *testing.F) {
	f.Add([]byte("\x00hello\r\n..dot\r\n.\r\n"), uint16(3))
	f.Add([]byte("\x00hello\r.\rMAIL FROM:<x@evil.test>\r\n.\r\n"), uint16(7))
	f.Add([]byte("\x02a\n.\nRSET\r\n"), uint16(1))
	f.Add([]byte("\x01a\r\n.\nb\n.\r\nc\r\n.\r\n"), uint16(2))
	srv, err := New(testOptions(f, func(o *Options) { o.MyNetworks = nil }), &memQueue{t: f}, nil, zerolog.Nop())
	if err != nil {
		f.Fatal(err)
	}
	modes := []BareNewline{BareNewlineNormalize, BareNewlineReject, BareNewlineNo}
	f.Fuzz(func(t *testing.T, in []byte, cut uint16) {
		if len(in) == 0 {
			return
		}
		mode := modes[int(in[0])%len(modes)]
		data := in[1:]
		conn := &memConn{r: bytes.NewReader(data)}
		s := newSession(srv, srv.cfg.Load(), conn, netip.MustParseAddr("192.0.2.1"))
		s.bare = mode
		var got bytes.Buffer
		c := &content{w: &got, limit: 1 << 20}
		err := s.readData(c)
		if i := bareNewline(got.Bytes()); i >= 0 {
			t.Fatalf("DATA stored a bare CR or LF at %d: %q", i, got.Bytes())
		}
		if err == nil && mode != BareNewlineNo {
			consumed := data[:len(data)-conn.r.Len()-s.r.Buffered()]
			if !bytes.HasSuffix(consumed, []byte("\r\n.\r\n")) && !bytes.Equal(consumed, []byte(".\r\n")) {
				t.Fatalf("DATA ended without CRLF.CRLF: %q", consumed)
			}
		}

		// BDAT: the same bytes in pieces of cut+1 bytes, and whole.
		var whole, pieces bytes.Buffer
		cw := &content{w: &whole}
		cw.Write(data)
		cw.end()
		cp := &content{w: &pieces}
		step := int(cut)%64 + 1
		for p := data; len(p) > 0; {
			n := min(step, len(p))
			cp.Write(p[:n])
			p = p[n:]
		}
		cp.end()
		if !bytes.Equal(whole.Bytes(), pieces.Bytes()) {
			t.Fatalf("BDAT content depends on the chunks: %q vs %q", whole.Bytes(), pieces.Bytes())
		}
		if i := bareNewline(whole.Bytes()); i >= 0 {
			t.Fatalf("BDAT stored a bare CR or LF at %d: %q", i, whole.Bytes())
		}
		if cw.bareLF() != bytes.Contains(bytes.ReplaceAll(data, []byte("\r\n"), nil), []byte("\n")) {
			t.Fatalf("bareLF = %v for %q", cw.bareLF(), data)
		}
	})
}

// FuzzParse checks the command and ESMTP parameter parsers: no panics.
// The path parser has its own fuzz target (internal/addr FuzzParse).
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"FROM:<a@b.test> SIZE=10 BODY=8BITMIME", "TO:<@r1,@r2:u@x.test> NOTIFY=NEVER", `FROM:<"a b"@x.test>`,
		"FROM:<>", "TO:u@[IPv6:2001:db8::1]", "FROM:<jörg@bücher.test> SMTPUTF8", "TO:<a@[1.2.3.4]> ORCPT=rfc822;a+40b",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, arg string) {
		splitCommand(arg)
		for _, kw := range []string{"FROM:", "TO:"} {
			_, params, err := addr.ParseArg(arg, kw)
			if err != nil {
				continue
			}
			tx := &transaction{}
			for _, p := range params {
				tx.mailParam(p, 1000)
				var rc store.Recipient
				rcptParam(&rc, p)
			}
		}
		decodeXtext(arg)
		parseEnhanced(arg)
		if !strings.Contains(strings.ToLower(arg), "sleep") {
			fuzzAccessResult(arg)
		}
	})
}

// fuzzDefaults are DefaultOptions, read once for all the inputs.
var fuzzDefaults = sync.OnceValue(DefaultOptions)

// fuzzAccessResult interprets arg as an access table result.
func fuzzAccessResult(arg string) {
	cfg := &conf{opts: fuzzDefaults(), classNames: map[string]bool{}}
	c := &check{cfg: cfg, s: &session{log: zerolog.Nop(), namaddr: "x"}, class: "Client host", name: "x"}
	c.accessResult(arg)
}
