package main

import (
	"flag"
	"fmt"
	"io"
	"strings"
	"testing"
)

func TestJSONQuote(t *testing.T) {
	for _, tc := range []struct {
		in   string
		utf8 bool
		want string
	}{
		{"a@b.test", false, `"a@b.test"`},
		{`say "hi" \ bye`, false, `"say \"hi\" \\ bye"`},
		{"tab\there\r\n", false, `"tab?here??"`},
		{"jörg@b.test", false, `"j?rg@b.test"`},
		{"jörg@b.test", true, `"jörg@b.test"`},
	} {
		if got := jsonQuote(tc.in, tc.utf8); got != tc.want {
			t.Errorf("jsonQuote(%q, %v) = %s, want %s", tc.in, tc.utf8, got, tc.want)
		}
	}
}

func TestExtractRecipients(t *testing.T) {
	in := "To: a@x.test,\r\n b@x.test\r\nCC: \"C, Esq\" <c@x.test>\r\nBcc: d@x.test,\r\n\te@x.test\r\nSubject: To: not@x.test\r\n\r\nTo: body@x.test\r\n"
	out, rcpts := extractRecipients([]byte(in))
	if fmt.Sprint(rcpts) != "[a@x.test b@x.test c@x.test d@x.test e@x.test]" {
		t.Errorf("rcpts = %v", rcpts)
	}
	want := "To: a@x.test,\r\n b@x.test\r\nCC: \"C, Esq\" <c@x.test>\r\nSubject: To: not@x.test\r\n\r\nTo: body@x.test\r\n"
	if string(out) != want {
		t.Errorf("content = %q, want %q", out, want)
	}
}

func TestReadMessage(t *testing.T) {
	for _, tc := range []struct {
		in         string
		ignoreDots bool
		want       string
	}{
		{"From x Tue\nSubject: a\n\nb\n.\nc\n", false, "Subject: a\r\n\r\nb\r\n"},
		{"Subject: a\r\n\r\n.\r\nc", true, "Subject: a\r\n\r\n.\r\nc\r\n"},
		{"", false, ""},
	} {
		got, err := readMessage(strings.NewReader(tc.in), tc.ignoreDots, 1000)
		if err != nil || string(got) != tc.want {
			t.Errorf("readMessage(%q, %v) = %q, %v; want %q", tc.in, tc.ignoreDots, got, err, tc.want)
		}
	}
	if _, err := readMessage(strings.NewReader(strings.Repeat("x\n", 100)), false, 50); err == nil {
		t.Error("no error past the size limit")
	}
}

func TestParseSendmail(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-f", "<a@b>", "-t", "-oi", "x@y"}, "deliver a@b true true true [x@y]"},
		{[]string{"-fa@b", "-i", "-F", "Full Name", "-N", "never", "--", "-x@y"}, "deliver a@b true false true [-x@y]"},
		{[]string{"-r", "<>", "x@y"}, "deliver  true false false [x@y]"},
		{[]string{"-bp"}, "list  false false false []"},
		{[]string{"-qRcustomer.test"}, "site  false false false []"},
		{[]string{"-q1h"}, "ignore  false false false []"},
		{[]string{"-C", "/etc/x.cf", "-bm", "x@y"}, "deliver  false false false [x@y]"},
	} {
		a, code := parseSendmail(tc.args, io.Discard)
		if code != -1 {
			t.Errorf("parseSendmail(%v) code %d", tc.args, code)
			continue
		}
		got := fmt.Sprintf("%s %s %v %v %v %v", a.mode, a.sender, a.hasSender, a.extract, a.ignoreDots, a.rcpts)
		if got != tc.want {
			t.Errorf("parseSendmail(%v) = %s, want %s", tc.args, got, tc.want)
		}
	}
	if _, code := parseSendmail([]string{"-Z"}, io.Discard); code != exTempFail {
		t.Errorf("unknown option code %d", code)
	}
}

func TestValidQueueName(t *testing.T) {
	for s, want := range map[string]bool{"NOSUCHID": true, "a_b9": true, "": false, "a-b": false,
		strings.Repeat("a", 255): true, strings.Repeat("a", 256): false} {
		if validQueueName(s) != want {
			t.Errorf("validQueueName(%q) = %v", s, !want)
		}
	}
}

func TestParseMixed(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"a", "--json", "b"}, "[a b] true"},
		{[]string{"--json", "--", "-c"}, "[-c] true"},
		{[]string{"x"}, "[x] false"},
	} {
		fs := newTestFlagSet()
		j := fs.Bool("json", false, "")
		pos, err := parseMixed(fs, tc.args)
		if got := fmt.Sprintf("%v %v", pos, *j); err != nil || got != tc.want {
			t.Errorf("parseMixed(%v) = %s, %v; want %s", tc.args, got, err, tc.want)
		}
	}
}

func newTestFlagSet() *flag.FlagSet {
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	return fs
}
