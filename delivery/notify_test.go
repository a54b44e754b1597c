package delivery

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/holdfast-mta/holdfast/internal/testutil"
	"github.com/holdfast-mta/holdfast/store"
)

// withDSNMTA replaces the customer MTA by one that announces DSN.
func withDSNMTA(e *env) {
	e.mta = testutil.NewMTA(e.t, testutil.MTAOptions{DSN: true})
	e.tm["customer.test"] = "smtp:[127.0.0.1]:" + fmt.Sprint(e.mta.Port)
}

// put queues m with a small body and wakes the scheduler.
func (e *env) put(m *store.Message) store.ID {
	e.t.Helper()
	if m.Arrival.IsZero() {
		m.Arrival = e.clock.Now()
	}
	body := "From: <" + m.Sender + ">\r\nSubject: dsn test\r\nMessage-ID: <dsn@origin.test>\r\n\r\nHello.\r\n"
	if err := e.s.Enqueue(m, []byte(body)); err != nil {
		e.t.Fatal(err)
	}
	e.d.Wake()
	return m.ID
}

// A next hop that announces DSN gets RET, ENVID, NOTIFY and ORCPT, and
// the success notice is its business: we send none.
func TestDSNPassedOn(t *testing.T) {
	e := newEnv(t, withDSNMTA)
	id := e.put(&store.Message{Sender: "alice@origin.test", EnvID: "env-42", Ret: store.RetHdrs,
		Recipients: []store.Recipient{
			{Addr: "a@customer.test", Notify: store.NotifySuccess | store.NotifyFailure, Orig: "rfc822;Orig.A@customer.test"},
			{Addr: "b@customer.test", Notify: store.NotifyNever},
			{Addr: "c@customer.test"},
		}})
	e.waitGone(id)
	got := e.mta.Wait(1, 5*time.Second)
	if len(got) != 1 {
		t.Fatalf("%d messages", len(got))
	}
	r := got[0]
	if r.Ret != "HDRS" || r.EnvID != "env-42" {
		t.Errorf("MAIL FROM: RET=%q ENVID=%q", r.Ret, r.EnvID)
	}
	wantN, wantO := []string{"SUCCESS,FAILURE", "NEVER", ""}, []string{"RFC822;Orig.A@customer.test", "", ""}
	if strings.Join(r.Notify, "|") != strings.Join(wantN, "|") || strings.Join(r.ORcpt, "|") != strings.Join(wantO, "|") {
		t.Errorf("RCPT: NOTIFY=%q ORCPT=%q", r.Notify, r.ORcpt)
	}
	if n := e.origin.Wait(1, 300*time.Millisecond); len(n) != 0 {
		t.Fatalf("notice sent though the next hop took NOTIFY=SUCCESS: %s", n[0].Data)
	}
}

// Without DSN at the next hop the parameters are left out, and a
// recipient that asked NOTIFY=SUCCESS gets Postfix's "relayed" notice,
// queued in the same Finish as the outcome.
func TestSuccessNoticeWithoutDSN(t *testing.T) {
	e := newEnv(t, nil)
	id := e.put(&store.Message{Sender: "alice@origin.test", EnvID: "env-7", Ret: store.RetFull,
		Recipients: []store.Recipient{
			{Addr: "a@customer.test", Notify: store.NotifySuccess, Orig: "rfc822;a@customer.test"},
			{Addr: "b@customer.test"},
			{Addr: "c@customer.test", Notify: store.NotifySuccess | store.NotifyNever},
		}})
	e.waitGone(id)
	got := e.mta.Wait(1, 5*time.Second)
	if len(got) != 1 || got[0].Ret != "" || got[0].EnvID != "" || strings.Join(got[0].Notify, "") != "" || strings.Join(got[0].ORcpt, "") != "" {
		t.Fatalf("received %+v", got)
	}
	notices := e.origin.Wait(1, 5*time.Second)
	if len(notices) != 1 {
		t.Fatalf("%d notices", len(notices))
	}
	n := notices[0]
	if n.From != "" || len(n.To) != 1 || n.To[0] != "alice@origin.test" {
		t.Fatalf("notice envelope %q -> %q", n.From, n.To)
	}
	d := parseDSN(t, n.Data)
	if d.subject != "Successful Mail Delivery Report" {
		t.Errorf("subject %q", d.subject)
	}
	if !strings.Contains(d.text, "Your message was successfully delivered to the destination(s)") ||
		!strings.Contains(d.text, "<a@customer.test>: delivery via 127.0.0.1[127.0.0.1]:") ||
		strings.Contains(d.text, "b@customer.test") || strings.Contains(d.text, "c@customer.test") {
		t.Errorf("text:\n%s", d.text)
	}
	checkField(t, d.msg, "Original-Envelope-Id", "env-7")
	if len(d.rcpts) != 1 {
		t.Fatalf("%d recipients in the report", len(d.rcpts))
	}
	checkField(t, d.rcpts[0], "Final-Recipient", "rfc822; a@customer.test")
	checkField(t, d.rcpts[0], "Action", "relayed")
	checkField(t, d.rcpts[0], "Status", "2.0.0")
	checkField(t, d.rcpts[0], "Remote-MTA", "dns; 127.0.0.1")
	if !strings.HasPrefix(d.rcpts[0].Get("Diagnostic-Code"), "smtp; 250") {
		t.Errorf("Diagnostic-Code %q", d.rcpts[0].Get("Diagnostic-Code"))
	}
	// RET=FULL asks for the content of failure notices only.
	if d.origType != "text/rfc822-headers" || strings.Contains(d.original, "Hello.") {
		t.Errorf("original part %q:\n%s", d.origType, d.original)
	}
	if !strings.Contains(e.logs.String(), `"event":"success"`) {
		t.Errorf("no log line for the success notice")
	}
}

// NOTIFY=NEVER, and NOTIFY without FAILURE, get no non-delivery notice.
func TestNotifyFailureOnly(t *testing.T) {
	e := newEnv(t, nil)
	e.mta.RcptAll(testutil.Reply(550, "5.1.1 no such user"))
	id := e.put(&store.Message{Sender: "alice@origin.test", Recipients: []store.Recipient{
		{Addr: "never@customer.test", Notify: store.NotifyNever},
		{Addr: "success@customer.test", Notify: store.NotifySuccess | store.NotifyDelay},
		{Addr: "fail@customer.test", Notify: store.NotifyFailure},
		{Addr: "plain@customer.test"},
	}})
	e.waitGone(id)
	notices := e.origin.Wait(2, 500*time.Millisecond)
	if len(notices) != 1 {
		t.Fatalf("%d notices", len(notices))
	}
	d := parseDSN(t, notices[0].Data)
	var listed []string
	for _, r := range d.rcpts {
		listed = append(listed, r.Get("Final-Recipient"))
		checkField(t, r, "Action", "failed")
	}
	if strings.Join(listed, ",") != "rfc822; fail@customer.test,rfc822; plain@customer.test" {
		t.Fatalf("notice lists %q", listed)
	}

	// Only NOTIFY=NEVER recipients: nothing at all.
	e.origin.Reset()
	id = e.put(&store.Message{Sender: "alice@origin.test", Recipients: []store.Recipient{
		{Addr: "never@customer.test", Notify: store.NotifyNever}}})
	e.waitGone(id)
	if n := e.origin.Wait(1, 300*time.Millisecond); len(n) != 0 {
		t.Fatalf("notice for NOTIFY=NEVER")
	}
}

// The delay warning goes only to recipients whose NOTIFY allows DELAY
// (none given counts as allowing it); it is still marked sent.
func TestNotifyDelay(t *testing.T) {
	e := newEnv(t, nil)
	e.mta.Down()
	a := e.put(&store.Message{Sender: "alice@origin.test", WarnAt: t0, Recipients: []store.Recipient{
		{Addr: "fail@customer.test", Notify: store.NotifyFailure},
		{Addr: "delay@customer.test", Notify: store.NotifyDelay},
		{Addr: "plain@customer.test"},
	}})
	got := e.waitAttempts(a, 1)
	if !got.WarnAt.IsZero() {
		t.Fatalf("WarnAt not cleared")
	}
	notices := e.origin.Wait(1, 5*time.Second)
	if len(notices) != 1 {
		t.Fatalf("%d notices", len(notices))
	}
	d := parseDSN(t, notices[0].Data)
	if d.subject != "Delayed Mail (still being retried)" || len(d.rcpts) != 2 {
		t.Fatalf("%q with %d recipients", d.subject, len(d.rcpts))
	}
	checkField(t, d.rcpts[0], "Final-Recipient", "rfc822; delay@customer.test")
	checkField(t, d.rcpts[1], "Final-Recipient", "rfc822; plain@customer.test")

	e.origin.Reset()
	b := e.put(&store.Message{Sender: "alice@origin.test", WarnAt: t0, Recipients: []store.Recipient{
		{Addr: "fail@customer.test", Notify: store.NotifyFailure | store.NotifySuccess}}})
	if got := e.waitAttempts(b, 1); !got.WarnAt.IsZero() {
		t.Fatalf("WarnAt not cleared without a notice")
	}
	if n := e.origin.Wait(1, 300*time.Millisecond); len(n) != 0 {
		t.Fatalf("delay notice without NOTIFY=DELAY")
	}
}
