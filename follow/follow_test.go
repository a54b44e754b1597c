package follow

import (
	"context"
	"testing"
	"time"

	"github.com/holdfast-mta/holdfast/internal/testutil"
	"github.com/holdfast-mta/holdfast/store"
)

// deliver leases every due message and delivers all its recipients, then
// tells feed (which may be nil) the outcomes, as the scheduler does.
func deliver(t *testing.T, st *store.Store, feed *Feed) {
	t.Helper()
	leased, err := st.Lease(time.Now().Add(time.Hour), 100)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range leased {
		var f store.Finish
		for i := range m.Recipients {
			f.Outcomes = append(f.Outcomes, store.Outcome{Rcpt: i, Result: store.RcptDelivered, Reply: "250 ok"})
		}
		if err := st.Finish(m.ID, f); err != nil {
			t.Fatal(err)
		}
		for _, r := range m.Recipients {
			feed.Outcome(m.ID, r.Addr, "sent")
		}
	}
}

// A recipient whose message left the queue is Delivered when the feed
// told its outcome, Done without a feed.
func TestFollow(t *testing.T) {
	for _, withFeed := range []bool{true, false} {
		st := testutil.Store(t, store.Options{NoSync: true})
		m := &store.Message{ID: store.NewID(), Sender: "a@sender.test",
			Recipients: []store.Recipient{{Addr: "x@customer.test"}, {Addr: "y@other.test"}}}
		if err := st.Enqueue(m, []byte("Subject: x\r\n\r\nx\r\n")); err != nil {
			t.Fatal(err)
		}
		var feed *Feed
		if withFeed {
			feed = NewFeed()
		}
		w := feed.Watch()
		tr := Track(st, "customer.test", false)
		deliver(t, st, feed)
		var last Status
		err := w.Follow(context.Background(), tr, Status{Messages: 1}, 30*time.Second, func(s Status) error {
			last = s
			return nil
		})
		w.Close()
		if err != nil {
			t.Fatal(err)
		}
		want := Status{Messages: 1, Tracked: 1, Done: 1, End: true}
		if withFeed {
			want = Status{Messages: 1, Tracked: 1, Delivered: 1, End: true}
		}
		if last != want {
			t.Errorf("feed %v: last report %+v, want %+v", withFeed, last, want)
		}
		if feed != nil && len(feed.watchers) != 0 {
			t.Errorf("%d watchers after Close", len(feed.watchers))
		}
	}
}

func TestWait(t *testing.T) {
	if Wait(0) != DefaultWait || Wait(-time.Second) != DefaultWait || Wait(48*time.Hour) != MaxWait || Wait(time.Minute) != time.Minute {
		t.Error("Wait bounds")
	}
}
