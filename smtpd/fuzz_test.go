package smtpd

import (
	"bufio"
	"io"
	"net"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/holdfast-mta/holdfast/config"
	"github.com/holdfast-mta/holdfast/flush"
	"github.com/holdfast-mta/holdfast/internal/addr"
	"github.com/holdfast-mta/holdfast/store"
)

var replyLine = regexp.MustCompile(`^[2-5][0-9][0-9][ -][^\r\n]*\r\n$`)

// FuzzSession feeds arbitrary bytes as a client's whole input to a live
// session over loopback TCP and a real store: every output line must be
// a well-formed reply, the first the greeting, and the store consistent.
func FuzzSession(f *testing.F) {
	f.Add([]byte("EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<u@customer.test>\r\nDATA\r\nhi\r\n.\r\nETRN customer.test\r\nQUIT\r\n"))
	f.Add([]byte("HELO c\r\nETRN @customer.test\r\nETRN #x\r\nSTARTTLS\r\nVRFY <\"a b\"@c.test>\r\nRSET\r\n"))
	c, err := config.Parse("fuzz.cf", []byte("myhostname = relay.test\nmynetworks = 127.0.0.0/8\nrelay_domains = customer.test\n"+
		"smtpd_error_sleep_time = 0\nsmtpd_timeout = 2s\nmessage_size_limit = 4096\nsmtpd_forbid_unauth_pipelining = no\n"))
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
	st, err := store.Open(filepath.Join(f.TempDir(), "q.db"), store.Options{NoSync: true, Eligible: pol.Eligible, PolicyKey: pol.Key()})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() {
		if err := st.Check(); err != nil {
			f.Error(err)
		}
		st.Close()
	})
	srv, err := New(opts, st, flush.NewService(pol, st, &waker{}, zerolog.Nop()), zerolog.Nop())
	if err != nil {
		f.Fatal(err)
	}
	addr := serve(f, srv)
	f.Fuzz(func(t *testing.T, in []byte) {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		go func() {
			conn.Write(in)
			conn.(*net.TCPConn).CloseWrite()
		}()
		r := bufio.NewReader(conn)
		first := true
		for {
			l, err := r.ReadString('\n')
			if err == io.EOF && l == "" {
				break
			}
			if err != nil {
				t.Fatalf("read: %v (partial %q)", err, l)
			}
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

// fuzzAccessResult interprets arg as an access table result.
func fuzzAccessResult(arg string) {
	srv := &Server{opts: Options{}.withDefaults(), classNames: map[string]bool{}}
	c := &check{srv: srv, s: &session{log: zerolog.Nop(), namaddr: "x"}, class: "Client host", name: "x"}
	c.accessResult(arg)
}
