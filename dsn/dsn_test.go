package dsn

import (
	"strings"
	"testing"
)

func TestWrap(t *testing.T) {
	long := "<someone@example.test>: host mx.example.test[192.0.2.1] said: 550 5.1.1 <someone@example.test>: Recipient address rejected: User unknown in relay recipient table (in reply to RCPT TO command)"
	out := wrap(long, 79, "    ")
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) < 3 {
		t.Fatalf("not wrapped: %q", out)
	}
	for i, l := range lines {
		if len(l) > 79 {
			t.Errorf("line %d longer than 79: %q", i, l)
		}
		if i > 0 && !strings.HasPrefix(l, "    ") {
			t.Errorf("continuation %d not indented: %q", i, l)
		}
	}
	if strings.Join(strings.Fields(out), " ") != long {
		t.Errorf("words changed")
	}
}
