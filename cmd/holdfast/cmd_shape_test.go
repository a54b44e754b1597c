package main

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/holdfast-mta/holdfast/control"
	"github.com/holdfast-mta/holdfast/store"
)

// TestQueueShape checks qshape's table on a queue with a known age
// distribution, and the JSON form.
func TestQueueShape(t *testing.T) {
	e := newOpEnv(t, "")
	now := time.Now()
	for _, m := range []struct {
		age   time.Duration
		rcpts []string
	}{
		{2 * time.Minute, []string{"a@customer.test"}},
		{7 * time.Minute, []string{"b@customer.test", "c@Other.Test"}},
		{3 * time.Hour, []string{"d@customer.test"}},
		{72 * time.Hour, []string{"e@x.sub.customer.test"}},
		{72 * time.Hour, []string{"f@y.sub.customer.test"}},
	} {
		msg := &store.Message{ID: store.NewID(), Sender: "s@sender.test", Arrival: now.Add(-m.age)}
		for _, r := range m.rcpts {
			msg.Recipients = append(msg.Recipients, store.Recipient{Addr: r})
		}
		if err := e.store.Enqueue(msg, []byte("Subject: x\r\n\r\nx\r\n")); err != nil {
			t.Fatal(err)
		}
	}
	out := e.expect(t, 0, "*", "", "holdfast", "queue", "shape", "-c", e.cf)
	want := `                                         T  5 10 20 40 80 160 320 640 1280 1280+
                                  TOTAL  6  1  2  0  0  0   0   1   0    0     2
                          customer.test  3  1  1  0  0  0   0   1   0    0     0
                             other.test  1  0  1  0  0  0   0   0   0    0     0
                    x.sub.customer.test  1  0  0  0  0  0   0   0   0    0     1
                    y.sub.customer.test  1  0  0  0  0  0   0   0   0    0     1
`
	if out != want {
		t.Errorf("queue shape:\n%s\nwant:\n%s", out, want)
	}
	out = e.expect(t, 0, "*", "", "holdfast", "queue", "shape", "-c", e.cf, "-s", "-b", "3", "-t", "60", "-l", "--json")
	var sh control.Shape
	if err := json.Unmarshal([]byte(out), &sh); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(sh.Heads, " "); got != "T 60 120 120+" {
		t.Errorf("linear heads %q", got)
	}
	if len(sh.Rows) != 2 || sh.Rows[1].Domain != "sender.test" || sh.Rows[1].Counts[0] != 5 ||
		sh.Rows[1].Counts[1] != 2 || sh.Rows[1].Counts[3] != 3 {
		t.Errorf("sender shape: %+v", sh.Rows)
	}
	out = e.expect(t, 0, "*", "", "holdfast", "queue", "shape", "-c", e.cf, "-p", "-m", "2")
	if !strings.Contains(out, "\n                     .sub.customer.test  2  0  0  0  0  0   0   0   0    0     2\n") {
		t.Errorf("parent rows missing:\n%s", out)
	}
	e.expect(t, 64, "", "*", "holdfast", "queue", "shape", "-c", e.cf, "nosuch")
}
