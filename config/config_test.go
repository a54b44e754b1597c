package config

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"
)

func mustParse(t *testing.T, text string) *Config {
	t.Helper()
	c, err := Parse("main.cf", []byte(text))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return c
}

func TestParseSyntax(t *testing.T) {
	tests := []struct {
		name, text, param, want string
	}{
		{"plain", "myhostname = mx.example\n", "myhostname", "mx.example"},
		{"no spaces", "myhostname=mx.example", "myhostname", "mx.example"},
		{"trailing blanks and CRLF", "myhostname =  mx.example \t\r\n", "myhostname", "mx.example"},
		{"empty value", "relayhost =\n", "relayhost", ""},
		{"comment lines", "# a comment\n  # indented comment\nmyhostname = a.example\n", "myhostname", "a.example"},
		{"brace in free text", "smtpd_banner = $myhostname ESMTP {ready\n", "smtpd_banner", "$myhostname ESMTP {ready"},
		{"hash inside a value is kept", "smtpd_banner = x # not a comment\n", "smtpd_banner", "x # not a comment"},
		{"blank lines", "\n\n   \nmyhostname = b.example\n\n", "myhostname", "b.example"},
		{"continuation", "relay_domains = a.tld,\n  b.tld\n\tc.tld\n", "relay_domains", "a.tld, b.tld c.tld"},
		{"continuation across comment and blank", "relay_domains = a.tld\n# comment\n\n  b.tld\n", "relay_domains", "a.tld b.tld"},
		{"later entry wins", "myhostname = a.example\nmyhostname = b.example\n", "myhostname", "b.example"},
		{"leading digit name", "2bounce_notice_recipient = ops\n", "2bounce_notice_recipient", "ops"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := mustParse(t, tt.text)
			if got, _ := c.Raw(tt.param); got != tt.want {
				t.Errorf("%s = %q, want %q", tt.param, got, tt.want)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name, text, want string
	}{
		{"missing equals", "myhostname = a\nrelayhost\n", `main.cf:2: missing '=' after parameter name "relayhost"`},
		{"bad name", "my-host = a\n", `main.cf:1: bad parameter name "my-host"`},
		{"leading continuation", "  relayhost = x\n", "main.cf:1: continuation line without a preceding parameter"},
		{"bad boolean", "myhostname = a.example\nsmtpd_helo_required = maybe\n", `main.cf:2: smtpd_helo_required: bad boolean value "maybe" (want yes or no)`},
		{"bad integer", "\n\nhopcount_limit = -5\n", `main.cf:3: hopcount_limit: bad integer value "-5" (want a number >= 0)`},
		{"below minimum", "smtpd_recipient_limit = 0\n", `main.cf:1: smtpd_recipient_limit: bad integer value "0" (want a number >= 1)`},
		{"time below minimum", "queue_run_delay = 0\n", `main.cf:1: queue_run_delay: bad time value "0" (want at least 1s)`},
		{"bad time", "minimal_backoff_time = 5x\n", `main.cf:1: minimal_backoff_time: bad time value "5x" (want a number with unit s, m, h, d or w)`},
		{"bad size", "message_size_limit = 10MB\n", `main.cf:1: message_size_limit: bad size value "10MB" (want bytes, optionally with k, m or g)`},
		{"bad enum", "log_format = xml\n", `main.cf:1: log_format: bad value "xml" (want json or console or postfix)`},
		{"bad network", "mynetworks = 127.0.0.0/33\n", `main.cf:1: mynetworks: bad network "127.0.0.0/33"`},
		{"bad table type", "transport_maps = ldap:/etc/x\n", `main.cf:1: transport_maps: unsupported table type "ldap" in "ldap:/etc/x" (holdfast reads hash, texthash, btree, lmdb, cdb, dbm, sdbm, inline, static)`},
		{"undefined name in a list", "relay_domains = a.tld $customers\n", "main.cf:1: relay_domains: undefined parameter $customers"},
		{"bad table in a user list", "authorized_flush_users = root, ldap:/etc/x\n", `main.cf:1: authorized_flush_users: unsupported table type "ldap" in "ldap:/etc/x" (holdfast reads hash, texthash, btree, lmdb, cdb, dbm, sdbm, inline, static)`},
		{"lone negation in a user list", "authorized_mailq_users = ! root\n", `main.cf:1: authorized_mailq_users: empty element after '!'`},
		{"unbalanced brace", "transport_maps = inline:{ a=b\n", `main.cf:1: transport_maps: unbalanced braces in "inline:{ a=b"`},
		{"unclosed reference", "myorigin = ${mydomain\n", `main.cf:1: myorigin: missing '}' in "${mydomain"`},
		{"loop", "a = $b\n\nb = ${a}\nmyorigin = $a\n", "main.cf:1: a: parameter loop: $a -> $b -> $a"},
		{"expansion bomb", "a0 = xxxxxxxxxxxxxxxx\n" + bomb(17) + "myorigin = $a17\n", "main.cf:18: a17: value longer than 1048576 bytes after expansion"},
		{"self loop", "myhostname = x\nmyorigin = $myorigin.x\n", "main.cf:2: myorigin: parameter loop: $myorigin -> $myorigin"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("main.cf", []byte(tt.text))
			if err == nil {
				t.Fatalf("Parse succeeded, want %q", tt.want)
			}
			if err.Error() != tt.want {
				t.Errorf("error\n got %q\nwant %q", err.Error(), tt.want)
			}
			var ce *Error
			if !errors.As(err, &ce) {
				t.Errorf("error %T is not a *config.Error", err)
			}
		})
	}
}

// authorized_*_users are Postfix user lists: names, !name, /file and
// type:table elements all load.
func TestUserLists(t *testing.T) {
	c := mustParse(t, "authorized_flush_users = root, mail\n"+
		"authorized_mailq_users = !nobody, /etc/holdfast/mailq_users, static:anyone\n"+
		"authorized_submit_users = hash:/etc/holdfast/submitters inline:{ root=x }\n")
	got, err := c.List("authorized_flush_users")
	if err != nil || strings.Join(got, " ") != "root mail" {
		t.Errorf("authorized_flush_users = %q, %v", got, err)
	}
}

// TestBadValueMessage quotes the operator-facing message for a bad value
// exactly: file, line, parameter, what is wrong.
func TestBadValueMessage(t *testing.T) {
	_, err := Parse("/etc/holdfast/holdfast.cf", []byte("# relay\nmyhostname = relay.example\nmaximal_queue_lifetime = five days\n"))
	const want = `/etc/holdfast/holdfast.cf:3: maximal_queue_lifetime: bad time value "five days" (want a number with unit s, m, h, d or w)`
	if err == nil || err.Error() != want {
		t.Fatalf("got %v\nwant %s", err, want)
	}
	var ce *Error
	if !errors.As(err, &ce) || ce.File != "/etc/holdfast/holdfast.cf" || ce.Line != 3 || ce.Param != "maximal_queue_lifetime" {
		t.Fatalf("fields: %+v", ce)
	}
}

func TestExpand(t *testing.T) {
	text := `
myhostname = mx.example.net
relay_domains = customer.tld other.tld
fast_flush_domains = $relay_domains, extra.tld
site = ${mydomain}
nested = <$site> <$(site)>
cond_set = ${relay_domains?yes-relay}
cond_unset = ${relayhost?direct}${relayhost:no-relayhost}
undefined_cond = [${nothing?x}${nothing:y}]
dollar = a $ sign, $-1 and $
alt_set = ${relay_domains?{relay}:{direct}}
alt_unset = ${relayhost?{via $relayhost}:{direct to $myhostname}} ${relayhost:{braced}}
`
	c := mustParse(t, text)
	tests := map[string]string{
		"fast_flush_domains": "customer.tld other.tld, extra.tld",
		"mydomain":           "example.net", // computed from myhostname
		"myorigin":           "mx.example.net",
		"mydestination":      "mx.example.net, localhost.example.net, localhost",
		"smtpd_banner":       "mx.example.net ESMTP holdfast",
		"control_socket":     "/var/spool/holdfast/control.sock",
		"nested":             "<example.net> <example.net>",
		"cond_set":           "yes-relay",
		"cond_unset":         "no-relayhost",
		"undefined_cond":     "[y]",
		"dollar":             "a $ sign, $-1 and $",
		"alt_set":            "relay",
		"alt_unset":          "direct to mx.example.net braced",
	}
	for name, want := range tests {
		got, err := c.Expand(name)
		if err != nil || got != want {
			t.Errorf("Expand(%s) = %q, %v; want %q", name, got, err, want)
		}
	}
	// Values stay raw: a later change of relay_domains is followed.
	c.Set("relay_domains", "new.tld")
	if got := c.String("fast_flush_domains"); got != "new.tld, extra.tld" {
		t.Errorf("after Set: fast_flush_domains = %q", got)
	}
	if _, err := c.Expand("no_such_parameter"); err == nil {
		t.Error("Expand of an unknown name succeeded")
	}
	// site and nested are used in expansions or unknown; only unused unknown names warn.
	want := []string{
		"main.cf:6: nested: unknown parameter",
		"main.cf:7: cond_set: unknown parameter",
		"main.cf:8: cond_unset: unknown parameter",
		"main.cf:9: undefined_cond: unknown parameter",
		"main.cf:10: dollar: unknown parameter",
		"main.cf:11: alt_set: unknown parameter",
		"main.cf:12: alt_unset: unknown parameter",
	}
	if got := c.Warnings(); !reflect.DeepEqual(got, want) {
		t.Errorf("warnings\n got %q\nwant %q", got, want)
	}
}

func TestTime(t *testing.T) {
	tests := []struct {
		param, value string
		want         time.Duration
	}{
		{"queue_run_delay", "45s", 45 * time.Second},
		{"queue_run_delay", "2m", 2 * time.Minute},
		{"queue_run_delay", "3h", 3 * time.Hour},
		{"queue_run_delay", "1d", 24 * time.Hour},
		{"queue_run_delay", "2w", 14 * 24 * time.Hour},
		{"queue_run_delay", "7M", 7 * time.Minute}, // case does not matter
		{"delay_warning_time", "0", 0},
		{"queue_run_delay", "10", 10 * time.Second},                     // default 300s
		{"maximal_queue_lifetime", "3", 3 * 24 * time.Hour},             // default 5d
		{"delay_warning_time", "4", 4 * time.Hour},                      // default 0h
		{"fast_flush_refresh_time", "12", 12 * time.Hour},               // reference spec 5.2
		{"maximal_queue_lifetime", "36h", 36 * time.Hour},               // explicit unit wins
		{"smtp_data_done_timeout", "$queue_run_delay", 5 * time.Minute}, // via expansion
	}
	for _, tt := range tests {
		c := Default()
		c.Set(tt.param, tt.value)
		got, err := c.Time(tt.param)
		if err != nil || got != tt.want {
			t.Errorf("%s = %s: got %v, %v; want %v", tt.param, tt.value, got, err, tt.want)
		}
	}
	for _, bad := range []string{"", "s", "-1s", "1.5h", "1y", "3 h", "99999999999999999999w"} {
		c := Default()
		c.Set("queue_run_delay", bad)
		if _, err := c.Time("queue_run_delay"); err == nil {
			t.Errorf("queue_run_delay = %q accepted", bad)
		}
	}
	c := Default()
	for name, want := range map[string]time.Duration{
		"minimal_backoff_time": 300 * time.Second, "maximal_backoff_time": 4000 * time.Second,
		"maximal_queue_lifetime": 5 * 24 * time.Hour, "delay_warning_time": 0,
		"smtpd_timeout": 300 * time.Second, "smtp_connect_timeout": 30 * time.Second,
	} {
		if got, err := c.Time(name); err != nil || got != want {
			t.Errorf("default %s = %v, %v; want %v", name, got, err, want)
		}
	}
}

func TestScalars(t *testing.T) {
	c := mustParse(t, "soft_bounce = YES\nsmtpd_helo_required = no\nmessage_size_limit = 20m\nbounce_size_limit = 1000\nqueue_size_limit = 2g\nsmtpd_recipient_limit = 250\n")
	if b, err := c.Bool("soft_bounce"); err != nil || !b {
		t.Errorf("soft_bounce = %v, %v", b, err)
	}
	if b, err := c.Bool("smtpd_helo_required"); err != nil || b {
		t.Errorf("smtpd_helo_required = %v, %v", b, err)
	}
	for name, want := range map[string]int64{"message_size_limit": 20 << 20, "bounce_size_limit": 1000, "queue_size_limit": 2 << 30} {
		if n, err := c.Size(name); err != nil || n != want {
			t.Errorf("%s = %d, %v; want %d", name, n, err, want)
		}
	}
	if n, err := c.Int("smtpd_recipient_limit"); err != nil || n != 250 {
		t.Errorf("smtpd_recipient_limit = %d, %v", n, err)
	}
	d := Default()
	if n, _ := d.Size("message_size_limit"); n != 10240000 {
		t.Errorf("default message_size_limit = %d", n)
	}
	if n, _ := d.Int("smtp_destination_concurrency_limit"); n != 20 {
		t.Errorf("smtp_destination_concurrency_limit = %d, want $default_destination_concurrency_limit", n)
	}
}

func TestList(t *testing.T) {
	tests := []struct {
		value string
		want  []string
	}{
		{"", nil},
		{"a", []string{"a"}},
		{"a,b c\td , ,e,,", []string{"a", "b", "c", "d", "e"}},
		{"permit_mynetworks, reject", []string{"permit_mynetworks", "reject"}},
		{"inline:{ a=b, c=d } hash:/x", []string{"inline:{ a=b, c=d }", "hash:/x"}},
		{"static:{ some text }", []string{"static:{ some text }"}},
	}
	for _, tt := range tests {
		c := Default()
		c.Set("smtpd_etrn_restrictions", tt.value)
		got, err := c.List("smtpd_etrn_restrictions")
		if err != nil || !reflect.DeepEqual(got, tt.want) {
			t.Errorf("List(%q) = %q, %v; want %q", tt.value, got, err, tt.want)
		}
	}
}

func TestErrorFormat(t *testing.T) {
	for _, tt := range []struct {
		e    Error
		want string
	}{
		{Error{File: "f.cf", Line: 3, Param: "p", Msg: "m"}, "f.cf:3: p: m"},
		{Error{Param: "p", Msg: "m"}, "p: m"},
		{Error{File: "f.cf", Line: 2, Msg: "m"}, "f.cf:2: m"},
	} {
		if got := tt.e.Error(); got != tt.want {
			t.Errorf("%+v: %q, want %q", tt.e, got, tt.want)
		}
	}
}

func TestNamesAndDefaults(t *testing.T) {
	c := mustParse(t, "relay_domains = a.tld\nmy_custom = x\nfast_flush_domains = $relay_domains $my_custom\n")
	if got := c.Explicit(); !reflect.DeepEqual(got, []string{"fast_flush_domains", "my_custom", "relay_domains"}) {
		t.Errorf("Explicit = %q", got)
	}
	names := c.Names()
	if !strings.Contains(strings.Join(names, " "), " my_custom ") || len(names) != len(params)+1 {
		t.Errorf("Names has %d entries (table %d)", len(names), len(params))
	}
	if len(c.Warnings()) != 0 {
		t.Errorf("a user parameter used in an expansion warned: %q", c.Warnings())
	}
	if v, _ := c.DefaultValue("fast_flush_domains"); v != "$relay_domains" {
		t.Errorf("default fast_flush_domains = %q", v)
	}
	// Every default is valid on its own.
	if err := Default().Validate(); err != nil {
		t.Fatalf("defaults do not validate: %v", err)
	}
	for name, want := range map[string]string{
		"smtpd_listen": ":25", "queue_directory": "/var/spool/holdfast", "metrics_listen": "",
		"log_format": "json", "etrn_reply_counts": "no", "relay_domains": "",
		"smtpd_etrn_restrictions": "", "reject_code": "554", "defer_code": "450",
		"authorized_flush_users": "static:anyone", "mail_name": "holdfast",
	} {
		if got, _ := Default().Raw(name); got != want {
			t.Errorf("default %s = %q, want %q", name, got, want)
		}
	}
	if h := Default().String("myhostname"); h == "" {
		t.Error("myhostname default is empty")
	}
}

// bomb returns lines a1 = $a0$a0 ... an = $a(n-1)$a(n-1).
func bomb(n int) string {
	var b strings.Builder
	for i := 1; i <= n; i++ {
		fmt.Fprintf(&b, "a%d = $a%d$a%d\n", i, i-1, i-1)
	}
	return b.String()
}

// Stressed gives the ${stress?{x}:{y}} values x; stress set in the file
// forces one mode in both.
func TestStressed(t *testing.T) {
	c, err := Parse("t.cf", []byte("smtpd_junk_command_limit = ${stress?{2}:{7}}\n"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		c    *Config
		name string
		want string
	}{
		{c, "smtpd_junk_command_limit", "7"},
		{c.Stressed(), "smtpd_junk_command_limit", "2"},
		{c, "smtpd_timeout", "300s"},
		{c.Stressed(), "smtpd_timeout", "10s"},
		{c.Stressed(), "smtpd_per_request_deadline", "yes"},
	} {
		if got, err := tc.c.Expand(tc.name); err != nil || got != tc.want {
			t.Errorf("%s = %q, %v; want %q", tc.name, got, err, tc.want)
		}
	}
	if v, _ := c.Expand("stress"); v != "" {
		t.Errorf("stress = %q outside stress", v)
	}
	forced, err := Parse("t.cf", []byte("stress = yes\n"))
	if err != nil {
		t.Fatal(err)
	}
	if a, b := forced.String("smtpd_timeout"), forced.Stressed().String("smtpd_timeout"); a != "10s" || b != "10s" {
		t.Errorf("stress = yes: %s, stressed %s", a, b)
	}
	off, err := Parse("t.cf", []byte("stress =\n"))
	if err != nil {
		t.Fatal(err)
	}
	if v := off.Stressed().String("smtpd_timeout"); v != "300s" {
		t.Errorf("stress = (empty): stressed smtpd_timeout %s", v)
	}
}
