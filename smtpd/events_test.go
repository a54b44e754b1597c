package smtpd

import (
	"sync"
	"testing"
	"time"

	"github.com/holdfast-mta/holdfast/accept"
	"github.com/holdfast-mta/holdfast/internal/testutil"
)

// acceptEvents records the session events and the acceptance events
// (accept.Events), as the metrics receive them.
type acceptEvents struct {
	sessionEvents
	mu  sync.Mutex
	got []accept.Event
}

func (ev *acceptEvents) Accepted(a accept.Event) {
	ev.mu.Lock()
	ev.got = append(ev.got, a)
	ev.mu.Unlock()
}

func (ev *acceptEvents) events() []accept.Event {
	ev.mu.Lock()
	defer ev.mu.Unlock()
	return append([]accept.Event(nil), ev.got...)
}

// A message queued after DATA or BDAT LAST is told to Options.Events as
// accepted (package accept, the path local submission takes too), with
// its origin, envelope and size; a message refused after its content is
// not.
func TestAcceptedEvents(t *testing.T) {
	ev := &acceptEvents{}
	e := startServer(t, newConfig(t, "message_size_limit = 1000"), withOptions(func(o *Options) { o.Events = ev }))
	c := e.dial("")
	c.expect("220 *")
	c.ehlo()
	c.send("MAIL FROM:<a@sender.test>\r\nRCPT TO:<u@customer.test>\r\nRCPT TO:<v@customer.test>\r\nDATA\r\n")
	c.expect("250 *")
	c.expect("250 *")
	c.expect("250 *")
	c.expect("354 *")
	c.send("Subject: one\r\n\r\nbody\r\n.\r\n")
	c.expect("250 2.0.0 Ok: queued as *")
	c.send("MAIL FROM:<b@sender.test>\r\nRCPT TO:<u@customer.test>\r\nBDAT 6 LAST\r\nhello\n")
	c.expect("250 *")
	c.expect("250 *")
	c.expect("250 2.0.0 Ok: queued as *")
	big := make([]byte, 2000)
	for i := range big {
		big[i] = 'x'
	}
	c.send("MAIL FROM:<c@sender.test>\r\nRCPT TO:<u@customer.test>\r\nDATA\r\n")
	c.expect("250 *")
	c.expect("250 *")
	c.expect("354 *")
	c.send(string(big) + "\r\n.\r\n")
	c.expect("552 5.3.4 *")
	c.send("QUIT\r\n")
	c.expect("221 *")
	if !testutil.WaitFor(5*time.Second, func() bool { return len(ev.events()) >= 2 }) {
		t.Fatalf("events: %+v", ev.events())
	}
	got := ev.events()
	if len(got) != 2 {
		t.Fatalf("%d acceptance events, want 2: %+v", len(got), got)
	}
	for i, want := range []struct {
		sender string
		rcpts  int
	}{{"a@sender.test", 2}, {"b@sender.test", 1}} {
		g := got[i]
		m, err := e.st.Get(g.ID)
		if err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
		if g.Origin != accept.SMTP || g.Sender != want.sender || g.Recipients != want.rcpts || g.Size != m.Size || g.Size == 0 {
			t.Errorf("event %d = %+v, want sender %s, %d recipients, size %d", i, g, want.sender, want.rcpts, m.Size)
		}
	}
}
