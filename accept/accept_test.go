package accept

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/holdfast-mta/holdfast/internal/testutil"
	"github.com/holdfast-mta/holdfast/store"
)

type events struct{ got []Event }

func (e *events) Accepted(ev Event) { e.got = append(e.got, ev) }

// A message committed through a Draft is in the store whole, with the
// record made from its envelope, and the Events are told once.
func TestCommit(t *testing.T) {
	st := testutil.Store(t, store.Options{NoSync: true})
	ev := &events{}
	a := New(st, ev)
	d, err := a.Begin()
	if err != nil {
		t.Fatal(err)
	}
	content := "Subject: x\r\n\r\nhello\r\n"
	d.Write([]byte(content))
	now := time.Date(2026, 11, 3, 10, 0, 0, 0, time.UTC)
	m, err := d.Commit(Envelope{Origin: SMTP, Sender: "s@sender.test", Arrival: now, Hold: true,
		Recipients: []store.Recipient{{Addr: "r@customer.test"}, {Addr: "q@customer.test"}},
		Protocol:   "ESMTP", ClientName: "c.test", DelayWarning: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	got, err := st.Get(d.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.State != store.StateHold || !got.WarnAt.Equal(now.Add(time.Hour)) || got.Protocol != "ESMTP" || len(got.Recipients) != 2 {
		t.Errorf("stored %+v", got)
	}
	if body, _ := st.Body(d.ID); string(body) != content {
		t.Errorf("body %q", body)
	}
	want := Event{ID: d.ID, Origin: SMTP, Sender: "s@sender.test", Recipients: 2, Size: int64(len(content))}
	if len(ev.got) != 1 || ev.got[0] != want || m.Size != want.Size {
		t.Errorf("events %+v, want %+v", ev.got, want)
	}
}

// An aborted Draft leaves nothing queued and tells nobody.
func TestAbort(t *testing.T) {
	st := testutil.Store(t, store.Options{NoSync: true})
	ev := &events{}
	d, err := New(st, ev).Begin()
	if err != nil {
		t.Fatal(err)
	}
	d.Write([]byte("x\r\n"))
	d.Abort()
	if _, err := st.Get(d.ID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Get after Abort: %v", err)
	}
	if n, _ := st.Stats(); n.Incoming != 0 || len(ev.got) != 0 {
		t.Errorf("stats %+v, events %v", n, ev.got)
	}
}

// The in-flight budget is answered at Begin, before any content.
func TestBeginBusy(t *testing.T) {
	st := testutil.Store(t, store.Options{NoSync: true, ContentLimit: 1})
	a := New(st, nil)
	first, err := a.Begin()
	if err != nil {
		t.Fatal(err)
	}
	defer first.Abort()
	if _, err := a.Begin(); !errors.Is(err, store.ErrBusy) {
		t.Errorf("second Begin: %v, want ErrBusy", err)
	}
}

func TestWarnAt(t *testing.T) {
	now := time.Unix(1000, 0)
	if !WarnAt("", now, time.Hour).IsZero() || !WarnAt("a@b", now, 0).IsZero() || !WarnAt("a@b", now, -1).IsZero() {
		t.Error("a warning for the null sender or without delay_warning_time")
	}
	if got := WarnAt("a@b", now, time.Hour); !got.Equal(now.Add(time.Hour)) {
		t.Errorf("WarnAt = %v", got)
	}
}

func TestReceived(t *testing.T) {
	date := time.Date(2026, 11, 3, 10, 0, 0, 0, time.UTC)
	smtp := Received(Trace{Helo: "helo.test", ClientName: "c.test", ClientAddr: "192.0.2.1", AuthSender: "u",
		By: "relay.test", MailName: "holdfast", Protocol: "ESMTPA", ID: "0123456789AB", For: "r@x.test", Date: date})
	want := "Received: from helo.test (c.test [192.0.2.1])\r\n\t(Authenticated sender: u)\r\n" +
		"\tby relay.test (holdfast) with ESMTPA id 0123456789AB\r\n\tfor <r@x.test>; Tue,  3 Nov 2026 10:00:00 +0000 (UTC)\r\n"
	if smtp != want {
		t.Errorf("SMTP:\n%q\nwant\n%q", smtp, want)
	}
	local := Received(Trace{By: "relay.test", MailName: "holdfast", Protocol: "LOCAL", ID: "0123456789AB", Date: date})
	if want := "Received: by relay.test (holdfast) with LOCAL id 0123456789AB;\r\n\tTue,  3 Nov 2026 10:00:00 +0000 (UTC)\r\n"; local != want {
		t.Errorf("local:\n%q\nwant\n%q", local, want)
	}
}

// WriteLocal adds the headers a local message lacks, keeps those it has,
// makes line ends CRLF and reports the size it read.
func TestWriteLocal(t *testing.T) {
	st := testutil.Store(t, store.Options{NoSync: true})
	d, err := New(st, nil).Begin()
	if err != nil {
		t.Fatal(err)
	}
	in := "From: me@x.test\nSubject: hi\n\nbody\n"
	date := time.Date(2026, 11, 3, 10, 0, 0, 0, time.UTC)
	head, size, err := d.WriteLocal(strings.NewReader(in), 1000, LocalHeaders{Sender: "me@x.test", Hostname: "relay.test", MailName: "holdfast", Date: date})
	if err != nil {
		t.Fatal(err)
	}
	if string(head) != "From: me@x.test\nSubject: hi\n\n" || size != int64(len(in)) {
		t.Errorf("head %q size %d", head, size)
	}
	if _, err := d.Commit(Envelope{Origin: Local, Sender: "me@x.test", Recipients: []store.Recipient{{Addr: "r@y.test"}}, Arrival: date}); err != nil {
		t.Fatal(err)
	}
	body, _ := st.Body(d.ID)
	for _, want := range []string{"Received: by relay.test (holdfast) with LOCAL id " + string(d.ID) + ";\r\n",
		"Date: Tue, 3 Nov 2026 10:00:00 +0000 (UTC)\r\n", "Message-Id: <20261103100000." + string(d.ID) + "@relay.test>\r\n",
		"From: me@x.test\r\nSubject: hi\r\n\r\nbody\r\n"} {
		if !strings.Contains(string(body), want) {
			t.Errorf("body lacks %q:\n%s", want, body)
		}
	}
	if strings.Count(string(body), "From:") != 1 {
		t.Errorf("From: added although present:\n%s", body)
	}
	if LocalUTF8("me@x.test", []string{"r@y.test"}, head) || !LocalUTF8("me@x.test", []string{"r@café.test"}, head) {
		t.Error("LocalUTF8")
	}
}
