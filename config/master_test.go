package config

import (
	"reflect"
	"strings"
	"testing"
)

func TestParseMaster(t *testing.T) {
	text := `# comment
smtp      inet  n       -       y       -       -       smtpd
etrn-only unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       10      smtp -v
# a comment inside the entry does not end it
    -o smtp_helo_timeout=5 -osmtp_connect_timeout=5
  -o { smtp_helo_name = name with space }
flush     unix  n       -       n       1000?   0       flush
`
	svcs, err := ParseMaster("master.cf", []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	if len(svcs) != 4 {
		t.Fatalf("%d services", len(svcs))
	}
	r := svcs[2]
	if r.Name != "relay" || r.Type != "unix" || r.MaxProc != "10" || r.Command != "smtp" || r.Line != 4 ||
		!reflect.DeepEqual(r.Args, []string{"-v"}) {
		t.Errorf("relay: %+v", r)
	}
	want := []Override{{"smtp_helo_timeout", "5"}, {"smtp_connect_timeout", "5"}, {"smtp_helo_name", "name with space"}}
	if !reflect.DeepEqual(r.Options, want) {
		t.Errorf("options %+v", r.Options)
	}
	if f := svcs[3]; f.Wakeup != "1000?" || f.Where() != "master.cf:8" {
		t.Errorf("flush: %+v", f)
	}
	for _, tc := range []struct{ text, err string }{
		{"smtp inet n - y - - \n", "master.cf:1: expected 8 or more fields"},
		{"smtp tcp n - y - - smtpd\n", `bad transport type "tcp"`},
		{"smtp inet n - y - x smtpd\n", `bad maxproc field "x"`},
		{"smtp inet maybe - y - - smtpd\n", `bad private field "maybe"`},
		{"x unix - - n - - smtp -o\n", "-o without name=value"},
		{"x unix - - n - - smtp -o novalue\n", `bad -o option "novalue"`},
		{"x unix - - n - - smtp -o {a=b\n", "unbalanced"},
		{"x unix - - n - - smtp\nx unix - - n - - lmtp\n", "master.cf:2: duplicate service x/unix (first defined at line 1)"},
		{"  x unix - - n - - smtp\n", "continuation line"},
	} {
		_, err := ParseMaster("master.cf", []byte(tc.text))
		if err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%q: %v, want %q", tc.text, err, tc.err)
		}
	}
}

// -o options override main.cf for one service only and are expanded.
func TestWith(t *testing.T) {
	c := mustParse(t, "myhostname = relay.test\nsmtp_helo_name = outer\n")
	w := c.With("master.cf", 3, []Override{{"smtp_helo_name", "x.$myhostname"}, {"smtp_connect_timeout", "bad"}})
	if got := w.String("smtp_helo_name"); got != "x.relay.test" || c.String("smtp_helo_name") != "outer" {
		t.Errorf("with %q, main %q", got, c.String("smtp_helo_name"))
	}
	if _, err := w.Time("smtp_connect_timeout"); err == nil || !strings.HasPrefix(err.Error(), "master.cf:3: smtp_connect_timeout") {
		t.Errorf("error %v", err)
	}
}
