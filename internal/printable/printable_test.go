package printable

import "testing"

func TestString(t *testing.T) {
	for in, want := range map[string]string{
		"mail.example.com":  "mail.example.com",
		"a\r\nReceived: x":  "a??Received: x",
		"tab\there\x00\x7f": "tab?here??",
		"ünï":               "ünï",
	} {
		if got := String(in); got != want {
			t.Errorf("String(%q) = %q, want %q", in, got, want)
		}
	}
}
