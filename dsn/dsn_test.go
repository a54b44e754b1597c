package dsn

import (
	"strings"
	"testing"
	"time"

	"github.com/holdfast-mta/holdfast/store"
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

// The queue lifetime: bounce_queue_lifetime for the null sender, never
// longer than maximal_queue_lifetime (Postfix's qmgr); 0 stays 0.
func TestLifetime(t *testing.T) {
	day := 24 * time.Hour
	for _, tc := range []struct {
		sender                string
		maximal, bounce, want time.Duration
	}{
		{"a@b.test", 5 * day, 2 * day, 5 * day},
		{"", 5 * day, 2 * day, 2 * day},
		{"", 1 * day, 5 * day, 1 * day},
		{"", 0, 5 * day, 0},
		{"a@b.test", 0, 5 * day, 0},
	} {
		if got := Lifetime(&store.Message{Sender: tc.sender}, tc.maximal, tc.bounce); got != tc.want {
			t.Errorf("sender %q, maximal %v, bounce %v: %v, want %v", tc.sender, tc.maximal, tc.bounce, got, tc.want)
		}
	}
}
