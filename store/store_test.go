package store

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/holdfast-mta/holdfast/migrations"
	bolt "go.etcd.io/bbolt"
)

func TestEnqueueGetBody(t *testing.T) {
	f := open(t)
	m := newMsg("a@customer.tld", "b@other.example")
	m.ID = NewID()
	want := m.ID
	body := []byte("Subject: hi\r\n\r\nhello\r\n")
	if err := f.s.Enqueue(m, body); err != nil {
		t.Fatal(err)
	}
	if m.ID != want || m.State != StateIncoming || m.Size != int64(len(body)) || !m.Arrival.Equal(f.clk.Now()) {
		t.Fatalf("Enqueue filled in %+v", m)
	}
	got := f.get(m.ID)
	if !sameMessage(got, m) {
		t.Fatalf("Get = %+v, want %+v", got, m)
	}
	b, err := f.s.Body(m.ID)
	if err != nil || !bytes.Equal(b, body) {
		t.Fatalf("Body = %q, %v", b, err)
	}
	if st := f.stats(); st != (Stats{Incoming: 1, Bytes: int64(len(body))}) {
		t.Fatalf("Stats = %+v", st)
	}
	if keys := f.flushKeys(); !reflect.DeepEqual(keys, []string{"customer.tld " + string(m.ID)}) {
		t.Fatalf("flush index %v", keys)
	}
	if due, ok, _ := f.s.NextDue(); !ok || !due.Equal(f.clk.Now()) {
		t.Fatalf("NextDue = %v %v", due, ok)
	}
	if err := f.s.Enqueue(newMsg("x@y.tld"), nil); err != nil {
		t.Fatal(err)
	}
	dup := newMsg("a@customer.tld")
	dup.ID = m.ID
	if err := f.s.Enqueue(dup, body); err == nil {
		t.Fatal("duplicate ID accepted")
	}
	bad := newMsg("a@customer.tld")
	bad.ID = "nope"
	if err := f.s.Enqueue(bad, body); !errors.Is(err, ErrBadID) {
		t.Fatalf("bad ID: %v", err)
	}
	if _, err := f.s.Get(NewID()); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get unknown: %v", err)
	}
	if _, err := f.s.Body(NewID()); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Body unknown: %v", err)
	}
	f.check()
	f.reopen() // durable
	if !sameMessage(f.get(m.ID), m) {
		t.Fatal("message changed across reopen")
	}
}

func TestLeaseOrderAndLimit(t *testing.T) {
	f := open(t)
	var ids []ID
	for i := 0; i < 5; i++ {
		ids = append(ids, f.enqueue("a@customer.tld"))
		f.clk.Add(time.Second)
	}
	ms, err := f.s.Lease(f.clk.Now(), 3)
	if err != nil || len(ms) != 3 {
		t.Fatalf("Lease = %d, %v", len(ms), err)
	}
	for i, m := range ms {
		if m.ID != ids[i] || m.State != StateActive || !m.Due.IsZero() {
			t.Fatalf("lease %d = %s %s", i, m.ID, m.State)
		}
	}
	f.check()
	if st := f.stats(); st.Active != 3 || st.Incoming != 2 {
		t.Fatalf("Stats = %+v", st)
	}
	// Not due yet: nothing.
	if ms, _ := f.s.Lease(f.clk.Now().Add(-time.Hour), 10); len(ms) != 0 {
		t.Fatalf("leased %d messages not due", len(ms))
	}
	if err := f.s.Unlease(ids[0]); err != nil {
		t.Fatal(err)
	}
	if err := f.s.Unlease(ids[0]); !errors.Is(err, ErrNotActive) {
		t.Fatalf("Unlease twice: %v", err)
	}
	f.check()
	ms, _ = f.s.Lease(f.clk.Now(), 10)
	if len(ms) != 3 || ms[0].ID != ids[0] {
		t.Fatalf("after Unlease, lease = %v", ms)
	}
	f.check()
}

func TestFinishDeliverDeletesAll(t *testing.T) {
	f := open(t)
	id := f.enqueue("a@customer.tld", "b@customer.tld")
	f.lease()
	f.finish(id, Finish{Outcomes: []Outcome{{Rcpt: 0, Result: RcptDelivered}, {Rcpt: 1, Result: RcptBounced, Reply: "550 no"}},
		Bounces: []NewMessage{{Msg: &Message{Recipients: []Recipient{{Addr: "sender@example.org"}}}, Body: []byte("dsn")}}})
	if _, err := f.s.Get(id); !errors.Is(err, ErrNotFound) {
		t.Fatalf("delivered message still there: %v", err)
	}
	if st := f.stats(); st != (Stats{Incoming: 1, Bytes: 3}) {
		t.Fatalf("Stats = %+v (want the bounce only)", st)
	}
	if len(f.flushKeys()) != 0 {
		t.Fatalf("flush entries left: %v", f.flushKeys())
	}
	if err := f.s.Finish(id, Finish{}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Finish of gone message: %v", err)
	}
}

func TestFinishDeferKeepsIndexExact(t *testing.T) {
	f := open(t)
	id := f.enqueue("a@customer.tld", "b@other.tld", "c@unindexed.example")
	m := f.lease()[id]
	if err := f.s.Finish(id, Finish{Outcomes: []Outcome{{Rcpt: 5}}}); err == nil {
		t.Fatal("out-of-range outcome accepted")
	}
	f.finish(id, Finish{Outcomes: []Outcome{
		{Rcpt: 0, Result: RcptPending, Reply: "refused", DSN: "4.4.1", NextAttempt: f.clk.Now().Add(300 * time.Second)},
		{Rcpt: 1, Result: RcptDelivered, Reply: "250 ok", RemoteMTA: "mx.other.tld"},
		{Rcpt: 2, Result: RcptPending, NextAttempt: f.clk.Now().Add(600 * time.Second)},
	}})
	got := f.get(id)
	if got.State != StateDeferred || !got.Due.Equal(f.clk.Now().Add(300*time.Second)) {
		t.Fatalf("state %s due %v", got.State, got.Due)
	}
	if r := got.Recipients[0]; r.Attempts != 1 || r.Reply != "refused" || r.DSN != "4.4.1" {
		t.Fatalf("rcpt 0 = %+v", r)
	}
	if keys := f.flushKeys(); !reflect.DeepEqual(keys, []string{"customer.tld " + string(id)}) {
		t.Fatalf("flush index %v", keys)
	}
	if err := f.s.Finish(id, Finish{}); !errors.Is(err, ErrNotActive) {
		t.Fatalf("Finish on deferred: %v", err)
	}
	_ = m
	// Due in 300 s: not leased before.
	if len(f.lease()) != 0 {
		t.Fatal("leased before due")
	}
	f.clk.Add(300 * time.Second)
	m = f.lease()[id]
	if m == nil {
		t.Fatal("not leased when due")
	}
	// Only rcpt 0 attempted; rcpt 2 keeps its NextAttempt.
	f.finish(id, Finish{Outcomes: []Outcome{{Rcpt: 0, Result: RcptDelivered}}, WarnSent: true})
	got = f.get(id)
	if got.State != StateDeferred || !got.Due.Equal(f.clk.Now().Add(300*time.Second)) || got.Recipients[2].Attempts != 1 {
		t.Fatalf("after partial: %+v", got)
	}
	if len(f.flushKeys()) != 0 {
		t.Fatalf("index should be empty (unindexed domain only): %v", f.flushKeys())
	}
}

func TestFlushDestination(t *testing.T) {
	f := open(t)
	a := f.enqueue("u@customer.tld", "v@elsewhere.tld")
	b := f.enqueue("u@sub.customer.tld")
	c := f.enqueue("u@xcustomer.tld")
	ms := f.lease()
	for _, id := range []ID{a, b, c} {
		f.deferAll(ms[id], time.Hour)
	}
	res, err := f.s.Flush("customer.tld", false)
	if err != nil || res != (FlushResult{Messages: 1}) {
		t.Fatalf("Flush exact = %+v, %v", res, err)
	}
	f.check()
	got := f.get(a)
	if got.State != StateIncoming || !got.Due.Equal(f.clk.Now()) || !got.Recipients[0].Forced || got.Recipients[1].Forced {
		t.Fatalf("after flush: %+v", got)
	}
	if !got.Recipients[1].NextAttempt.Equal(f.clk.Now().Add(time.Hour)) {
		t.Fatal("flush touched the other destination's recipient")
	}
	res, err = f.s.Flush("CUSTOMER.TLD.", true)
	if err != nil || res.Messages != 2 {
		t.Fatalf("Flush subtree = %+v, %v", res, err)
	}
	if f.get(c).State != StateDeferred {
		t.Fatal("xcustomer.tld flushed by customer.tld subtree")
	}
	f.check()
	// The attempt consumes Forced.
	ms = f.lease()
	if len(ms) != 2 || !ms[a].Recipients[0].Forced {
		t.Fatalf("lease after flush: %d", len(ms))
	}
	f.finish(a, Finish{Outcomes: []Outcome{{Rcpt: 0, Result: RcptPending, NextAttempt: f.clk.Now().Add(time.Hour)}}})
	if f.get(a).Recipients[0].Forced {
		t.Fatal("Forced not cleared by the attempt")
	}
	if res, _ := f.s.Flush("nothing.tld", true); res != (FlushResult{}) {
		t.Fatalf("Flush of empty destination = %+v", res)
	}
}

func TestFlushActiveMarksPending(t *testing.T) {
	f := open(t)
	id := f.enqueue("u@customer.tld", "w@other.tld")
	f.lease()
	res, err := f.s.Flush("customer.tld", false)
	if err != nil || res != (FlushResult{Messages: 1, Active: 1}) {
		t.Fatalf("Flush = %+v, %v", res, err)
	}
	if !f.get(id).Recipients[0].FlushPending {
		t.Fatal("FlushPending not set")
	}
	f.check()
	f.clk.Add(time.Minute)
	f.finish(id, Finish{Outcomes: []Outcome{
		{Rcpt: 0, Result: RcptPending, NextAttempt: f.clk.Now().Add(time.Hour)},
		{Rcpt: 1, Result: RcptPending, NextAttempt: f.clk.Now().Add(time.Hour)}}})
	got := f.get(id)
	if got.State != StateIncoming || !got.Recipients[0].Forced || got.Recipients[0].FlushPending ||
		!got.Recipients[0].NextAttempt.Equal(f.clk.Now()) || got.Recipients[1].Forced {
		t.Fatalf("after finish: %+v", got)
	}
}

func TestFlushAllAndFlushID(t *testing.T) {
	f := open(t)
	a := f.enqueue("u@customer.tld")
	b := f.enqueue("u@plain.example")
	c := f.enqueue("u@held.example")
	act := f.enqueue("u@act.example")
	ms := f.lease()
	for _, id := range []ID{a, b, c} {
		f.deferAll(ms[id], time.Hour)
	}
	if n, err := f.s.Hold(c); n != 1 || err != nil {
		t.Fatalf("Hold = %d, %v", n, err)
	}
	res, err := f.s.FlushAll()
	if err != nil || res != (FlushResult{Messages: 3, Active: 1}) {
		t.Fatalf("FlushAll = %+v, %v", res, err)
	}
	f.check()
	for _, id := range []ID{a, b} {
		if f.get(id).State != StateIncoming {
			t.Fatalf("%s not due after FlushAll", id)
		}
	}
	if f.get(c).State != StateHold || !f.get(act).Recipients[0].FlushPending {
		t.Fatal("FlushAll touched a held message or missed the active one")
	}
	ms = f.lease()
	f.deferAll(ms[a], time.Hour)
	if res, err := f.s.FlushID(a); err != nil || res.Messages != 1 {
		t.Fatalf("FlushID = %+v, %v", res, err)
	}
	if _, err := f.s.FlushID(NewID()); !errors.Is(err, ErrNotFound) {
		t.Fatalf("FlushID unknown: %v", err)
	}
	if res, _ := f.s.FlushID(c); res.Messages != 0 {
		t.Fatal("FlushID flushed a held message")
	}
}

func TestHoldReleaseRequeueDelete(t *testing.T) {
	f := open(t)
	a := f.enqueue("u@customer.tld")
	b := f.enqueue("u@customer.tld")
	ms := f.lease()
	f.deferAll(ms[a], time.Hour)
	f.deferAll(ms[b], time.Hour)
	if n, _ := f.s.Hold(a, a, NewID()); n != 1 {
		t.Fatalf("Hold counted %d", n)
	}
	f.check()
	if keys := f.flushKeys(); len(keys) != 1 {
		t.Fatalf("held message still indexed: %v", keys)
	}
	if r, _ := f.s.Flush("customer.tld", false); r.Messages != 1 {
		t.Fatalf("flush reached held message: %+v", r)
	}
	if st := f.stats(); st.Hold != 1 || st.Incoming != 1 {
		t.Fatalf("Stats %+v", st)
	}
	if n, _ := f.s.Release(a, b); n != 1 {
		t.Fatalf("Release counted %d", n)
	}
	f.check()
	if m := f.get(a); m.State != StateDeferred || !m.Due.Equal(f.clk.Now().Add(time.Hour)) {
		t.Fatalf("released: %s %v", m.State, m.Due)
	}
	if n, _ := f.s.Requeue(a); n != 1 {
		t.Fatal("Requeue")
	}
	f.check()
	if m := f.get(a); m.State != StateIncoming || m.Recipients[0].Attempts != 1 {
		t.Fatalf("requeued: %+v", m)
	}
	if n, _ := f.s.Delete(a, b, NewID()); n != 2 {
		t.Fatalf("Delete counted %d", n)
	}
	f.check()
	if st := f.stats(); st != (Stats{}) {
		t.Fatalf("Stats after delete: %+v", st)
	}
}

func TestHoldWhileActive(t *testing.T) {
	f := open(t)
	a := f.enqueue("u@customer.tld", "v@customer.tld")
	f.lease()
	f.s.Hold(a)
	f.check()
	f.finish(a, Finish{Outcomes: []Outcome{{Rcpt: 0, Result: RcptDelivered}}})
	m := f.get(a)
	if m.State != StateHold || m.Recipients[0].State != RcptDelivered {
		t.Fatalf("held-while-active after finish: %+v", m)
	}
	f.s.Release(a)
	f.check()
	if f.get(a).State != StateIncoming {
		t.Fatal("release after finish not due")
	}
	// Held during a lease that is then released without attempt.
	f.lease()
	f.s.Hold(a)
	if err := f.s.Unlease(a); err != nil {
		t.Fatal(err)
	}
	f.check()
	f.s.Release(a)
	if f.get(a).State != StateIncoming {
		t.Fatal("not incoming")
	}
	// Held during a lease, released before the attempt ends: still leased.
	f.lease()
	f.s.Hold(a)
	f.s.Release(a)
	if f.get(a).State != StateActive {
		t.Fatal("release of a still-leased message should keep it active")
	}
	f.finish(a, Finish{Outcomes: []Outcome{{Rcpt: 1, Result: RcptDelivered}}})
}

func TestAllVariants(t *testing.T) {
	f := open(t)
	for i := 0; i < 25; i++ {
		f.enqueue("u@customer.tld")
	}
	f.enqueue("u@other.example")
	n, err := f.s.HoldAll(Filter{Domain: "customer.tld"})
	if err != nil || n != 25 {
		t.Fatalf("HoldAll = %d, %v", n, err)
	}
	f.check()
	if n, _ := f.s.ReleaseAll(Filter{States: []State{StateHold}}); n != 25 {
		t.Fatalf("ReleaseAll = %d", n)
	}
	if n, _ := f.s.RequeueAll(Filter{}); n != 26 {
		t.Fatalf("RequeueAll = %d", n)
	}
	if n, _ := f.s.DeleteAll(Filter{}); n != 26 {
		t.Fatalf("DeleteAll = %d", n)
	}
	f.check()
}

func TestList(t *testing.T) {
	f := open(t)
	var ids []ID
	for i := 0; i < 23; i++ {
		r := "u@customer.tld"
		if i%2 == 1 {
			r = "Someone@Other.example"
		}
		ids = append(ids, f.enqueue(r))
		f.clk.Add(time.Second)
	}
	var got []ID
	var after ID
	for pages := 0; ; pages++ {
		page, next, err := f.s.List(Filter{}, after, 5)
		if err != nil || pages > 10 {
			t.Fatal(err)
		}
		for _, m := range page {
			got = append(got, m.ID)
		}
		if next == "" {
			break
		}
		after = next
	}
	sorted := append([]ID(nil), ids...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i] < sorted[j] })
	if !reflect.DeepEqual(got, sorted) {
		t.Fatalf("List pages = %v, want %v", got, sorted)
	}
	count := func(fl Filter) int {
		page, _, err := f.s.List(fl, "", 1000)
		if err != nil {
			t.Fatal(err)
		}
		return len(page)
	}
	if n := count(Filter{Domain: "other.example"}); n != 11 {
		t.Errorf("domain filter: %d", n)
	}
	if n := count(Filter{Recipient: "someone@"}); n != 11 {
		t.Errorf("recipient filter: %d", n)
	}
	if n := count(Filter{Sender: "SENDER@example"}); n != 23 {
		t.Errorf("sender filter: %d", n)
	}
	if n := count(Filter{OlderThan: f.clk.Now().Add(-20 * time.Second)}); n != 3 {
		t.Errorf("age filter: %d", n)
	}
	f.s.Hold(ids[0])
	if n := count(Filter{States: []State{StateHold, StateDeferred}}); n != 1 {
		t.Errorf("state filter: %d", n)
	}
}

func TestCrashRecoveryReturnsLeases(t *testing.T) {
	f := open(t)
	a := f.enqueue("u@customer.tld")
	b := f.enqueue("u@customer.tld")
	f.lease()
	f.s.Flush("customer.tld", false)
	f.s.Hold(b)
	f.clk.Add(time.Minute)
	f.crash()
	if r := f.s.Report(); r.Recovered != 2 {
		t.Fatalf("Report = %+v", r)
	}
	f.check()
	m := f.get(a)
	if m.State != StateIncoming || !m.Due.Equal(f.clk.Now()) || !m.Recipients[0].Forced {
		t.Fatalf("recovered: %+v", m)
	}
	if m := f.get(b); m.State != StateHold || m.HeldFrom != StateIncoming {
		t.Fatalf("recovered held: %+v", m)
	}
}

func TestPolicyChangeRebuildsIndex(t *testing.T) {
	f := open(t)
	a := f.enqueue("u@customer.tld", "v@other.example")
	if len(f.flushKeys()) != 1 {
		t.Fatal("index")
	}
	f.o.Eligible = func(d string) bool { return d == "other.example" }
	f.o.PolicyKey = "other"
	f.reopen()
	if !f.s.Report().Rebuilt {
		t.Fatal("not rebuilt")
	}
	if keys := f.flushKeys(); !reflect.DeepEqual(keys, []string{"other.example " + string(a)}) {
		t.Fatalf("index after rebuild: %v", keys)
	}
	f.check()
	f.reopen()
	if f.s.Report().Rebuilt {
		t.Fatal("rebuilt again with the same key")
	}
	f.o.Eligible, f.o.PolicyKey = nil, ""
	f.reopen()
	if len(f.flushKeys()) != 0 {
		t.Fatal("nil Eligible indexes something")
	}
	f.check()
}

func TestLockedNamesPid(t *testing.T) {
	f := open(t)
	o := f.o
	o.Timeout = 50 * time.Millisecond
	_, err := Open(f.path, o)
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("second Open: %v", err)
	}
	if want := "pid " + itoa(os.Getpid()); !strings.Contains(err.Error(), want) {
		t.Fatalf("error %q does not name %s", err, want)
	}
	if err := Compact(f.path, f.path+".new"); !errors.Is(err, ErrLocked) {
		t.Fatalf("Compact of open store: %v", err)
	}
	f.s.Close()
	if _, err := os.Stat(f.path + ".pid"); !os.IsNotExist(err) {
		t.Fatal("pid file left after Close")
	}
	if err := f.s.Close(); !errors.Is(err, ErrClosed) {
		t.Fatalf("Close twice: %v", err)
	}
	if _, err := f.s.Lease(time.Now(), 1); !errors.Is(err, ErrClosed) {
		t.Fatalf("Lease after Close: %v", err)
	}
	if err := f.s.Enqueue(newMsg("a@b.tld"), nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("Enqueue after Close: %v", err)
	}
}

func itoa(n int) string { return strings.TrimSpace(strings.Repeat(" ", 0) + fmtInt(n)) }

func fmtInt(n int) string {
	var b []byte
	for n > 0 || len(b) == 0 {
		b = append([]byte{byte('0' + n%10)}, b...)
		n /= 10
	}
	return string(b)
}

func TestSchemaTooNew(t *testing.T) {
	f := open(t)
	f.s.Close()
	db, err := bolt.Open(f.path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	r := migrations.Default.Clone()
	r.Register(migrations.Step{Version: migrations.Default.Latest() + 1, Name: "future", Apply: func(*bolt.Tx) error { return nil }})
	if _, _, err := r.Apply(db); err != nil {
		t.Fatal(err)
	}
	db.Close()
	if _, err := Open(f.path, f.o); !errors.Is(err, ErrSchemaTooNew) {
		t.Fatalf("Open newer schema: %v", err)
	}
}

func TestMaxSizeNoSpace(t *testing.T) {
	f := open(t)
	f.o.MaxSize = 2 << 20
	f.reopen()
	body := bytes.Repeat([]byte("x"), 64<<10)
	var err error
	var kept []ID
	for i := 0; i < 100; i++ {
		m := newMsg("u@customer.tld")
		if err = f.s.Enqueue(m, body); err != nil {
			break
		}
		kept = append(kept, m.ID)
	}
	if !errors.Is(err, ErrNoSpace) {
		t.Fatalf("no ErrNoSpace after %d messages: %v", len(kept), err)
	}
	f.check()
	// Still usable: deliver some, then enqueue again.
	ms := f.lease()
	for _, id := range kept[:10] {
		f.finish(id, Finish{Outcomes: []Outcome{{Rcpt: 0, Result: RcptDelivered}}})
	}
	_ = ms
	if err := f.s.Enqueue(newMsg("u@customer.tld"), body); err != nil {
		t.Fatalf("Enqueue after freeing space: %v", err)
	}
	f.reopen()
	for _, id := range kept[10:] {
		if _, err := f.s.Get(id); err != nil {
			t.Fatalf("committed message lost: %v", err)
		}
	}
}

func TestClassify(t *testing.T) {
	for _, err := range []error{
		&os.PathError{Op: "write", Path: "q", Err: errnoENOSPC},
		errors.New("mmap allocate error: cannot allocate memory"),
		errors.New("file resize error: truncate q: no space left on device"),
	} {
		if !errors.Is(classify(err), ErrNoSpace) {
			t.Errorf("classify(%v) is not ErrNoSpace", err)
		}
	}
	if errors.Is(classify(errors.New("other")), ErrNoSpace) {
		t.Error("classify: other error is ErrNoSpace")
	}
}

func TestCorruptRecordQuarantined(t *testing.T) {
	f := open(t)
	var seen []ID
	f.o.OnCorrupt = func(id ID, err error) { seen = append(seen, id) }
	f.reopen()
	a := f.enqueue("u@customer.tld")
	b := f.enqueue("u@customer.tld")
	f.s.db.Update(func(tx *bolt.Tx) error {
		v := append([]byte(nil), tx.Bucket(bktMsg).Get([]byte(a))...)
		v[3] ^= 0xff
		return tx.Bucket(bktMsg).Put([]byte(a), v)
	})
	if err := f.s.Check(); err == nil {
		t.Fatal("Check missed the corrupt record")
	}
	if _, err := f.s.Get(a); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Get corrupt: %v", err)
	}
	if page, _, _ := f.s.List(Filter{}, "", 10); len(page) != 1 {
		t.Fatal("List should skip the corrupt record")
	}
	ms := f.lease()
	if len(ms) != 1 || ms[b] == nil {
		t.Fatalf("lease: %v", ms)
	}
	if !reflect.DeepEqual(seen, []ID{a}) {
		t.Fatalf("OnCorrupt saw %v", seen)
	}
	if st := f.stats(); st.Corrupt != 1 || st.Active != 1 || st.Incoming != 0 {
		t.Fatalf("Stats = %+v", st)
	}
	f.check()
	var body []byte
	f.s.db.View(func(tx *bolt.Tx) error {
		_, bk := corruptKeys(a)
		body = tx.Bucket(bktCorrupt).Get(bk)
		return nil
	})
	if len(body) == 0 {
		t.Fatal("body not kept with the corrupt record")
	}
	if n, _ := f.s.Delete(a); n != 1 {
		t.Fatal("Delete of corrupt record")
	}
	if st := f.stats(); st.Corrupt != 0 {
		t.Fatalf("Stats = %+v", st)
	}
}

func TestBackupAndCompact(t *testing.T) {
	f := open(t)
	body := bytes.Repeat([]byte("y"), 4096)
	var ids []ID
	for i := 0; i < 200; i++ {
		m := newMsg("u@customer.tld")
		f.s.Enqueue(m, body)
		ids = append(ids, m.ID)
	}
	f.s.PutDest("customer.tld", DestState{DeadUntil: f.clk.Now().Add(time.Hour), Reason: "refused"})
	var buf bytes.Buffer
	if _, err := f.s.Backup(&buf); err != nil {
		t.Fatal(err)
	}
	bk := filepath.Join(t.TempDir(), "backup.db")
	os.WriteFile(bk, buf.Bytes(), 0o600)
	o := f.o
	s2, err := Open(bk, o)
	if err != nil {
		t.Fatal(err)
	}
	if err := s2.Check(); err != nil {
		t.Fatal(err)
	}
	if st, _ := s2.Stats(); st.Incoming != 200 {
		t.Fatalf("backup stats %+v", st)
	}
	for _, id := range ids {
		if _, err := s2.Get(id); err != nil {
			t.Fatalf("backup: %s: %v", id, err)
		}
	}
	d, _ := s2.Dests()
	if d["customer.tld"].Reason != "refused" {
		t.Fatalf("Dests = %v", d)
	}
	s2.Close()
	for _, m := range f.lease() {
		f.s.Finish(m.ID, Finish{Outcomes: []Outcome{{Rcpt: 0, Result: RcptDelivered}}})
	}
	f.s.Close()
	dst := filepath.Join(t.TempDir(), "compact.db")
	if err := Compact(f.path, dst); err != nil {
		t.Fatal(err)
	}
	si, _ := os.Stat(f.path)
	di, _ := os.Stat(dst)
	if di.Size() >= si.Size() {
		t.Fatalf("compact %d >= %d", di.Size(), si.Size())
	}
	s3, err := Open(dst, o)
	if err != nil {
		t.Fatal(err)
	}
	defer s3.Close()
	if err := s3.Check(); err != nil {
		t.Fatal(err)
	}
	if d, _ := s3.Dests(); d["customer.tld"].Reason != "refused" {
		t.Fatal("dest lost in compaction")
	}
	s3.PutDest("customer.tld", DestState{})
	if d, _ := s3.Dests(); len(d) != 0 {
		t.Fatal("zero DestState should delete")
	}
}

func TestEnqueueNeedsRecipient(t *testing.T) {
	f := open(t)
	if err := f.s.Enqueue(newMsg(), []byte("x")); err == nil {
		t.Fatal("message without recipients accepted")
	}
}

func TestCheckFindsDrift(t *testing.T) {
	for name, breakIt := range map[string]func(tx *bolt.Tx, id ID) error{
		"stray flush": func(tx *bolt.Tx, id ID) error {
			return tx.Bucket(bktFlush).Put(flushKey("stray.tld", id), nil)
		},
		"missing flush": func(tx *bolt.Tx, id ID) error {
			return tx.Bucket(bktFlush).Delete(flushKey("customer.tld", id))
		},
		"stray due": func(tx *bolt.Tx, id ID) error {
			return tx.Bucket(bktDue).Put(dueKey(time.Unix(5, 0), id), nil)
		},
		"counter": func(tx *bolt.Tx, id ID) error {
			return tx.Bucket(bktMeta).Put(metaDeferred, putInt(7))
		},
		"orphan body": func(tx *bolt.Tx, id ID) error {
			return tx.Bucket(bktBody).Put([]byte(NewID()), []byte("x"))
		},
	} {
		t.Run(name, func(t *testing.T) {
			f := open(t)
			id := f.enqueue("u@customer.tld")
			f.s.db.Update(func(tx *bolt.Tx) error { return breakIt(tx, id) })
			if err := f.s.Check(); err == nil {
				t.Fatal("Check passed")
			}
			f.s.Close()
		})
	}
}

// A truncated queue file is refused with ErrDamaged instead of crashing
// in bbolt's page walk at open.
func TestOpenTruncatedIsDamaged(t *testing.T) {
	p := filepath.Join(t.TempDir(), "queue.db")
	s, err := Open(p, Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 20; i++ {
		m := &Message{Sender: "a@b.example", Recipients: []Recipient{{Addr: "x@c.example"}}}
		if err := s.Enqueue(m, make([]byte, 16<<10)); err != nil {
			t.Fatal(err)
		}
	}
	// Cut into the pages in use (bbolt may have grown the file beyond
	// them, so half the file size need not reach them).
	var used int64
	s.db.View(func(tx *boltTx) error { used = tx.Size(); return nil })
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(p, used/2/4096*4096); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(p, Options{}); !errors.Is(err, ErrDamaged) {
		t.Fatalf("Open of a truncated file: %v, want ErrDamaged", err)
	}
	if err := os.WriteFile(p, []byte("not a queue file, not at all"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(p, Options{}); !errors.Is(err, ErrDamaged) {
		t.Fatalf("Open of garbage: %v, want ErrDamaged", err)
	}
}

// Recipients deferred on arrival (defer_transports): Enqueue stores the
// message deferred until the earliest NextAttempt, indexed for a flush,
// in its one commit; a mixed message stays due now.
func TestEnqueueDeferredOnArrival(t *testing.T) {
	f := open(t)
	next := f.clk.Now().Add(300 * time.Second)
	deferOnArrival := func(r *Recipient) {
		r.Attempts, r.NextAttempt, r.Reply, r.DSN = 1, next, "deferred transport", "4.3.2"
	}
	m := newMsg("a@customer.tld", "b@customer.tld")
	deferOnArrival(&m.Recipients[0])
	deferOnArrival(&m.Recipients[1])
	m.Recipients[1].NextAttempt = next.Add(time.Minute)
	if err := f.s.Enqueue(m, []byte("x\r\n")); err != nil {
		t.Fatal(err)
	}
	f.check()
	if m.State != StateDeferred || !m.Due.Equal(next) {
		t.Fatalf("state %s due %v, want deferred at %v", m.State, m.Due, next)
	}
	if got := f.get(m.ID); got.State != StateDeferred || got.Recipients[0].Reply != "deferred transport" || got.Recipients[0].Attempts != 1 {
		t.Fatalf("stored %+v", got)
	}
	if st := f.stats(); st.Deferred != 1 || st.Incoming != 0 {
		t.Fatalf("Stats = %+v", st)
	}
	if keys := f.flushKeys(); !reflect.DeepEqual(keys, []string{"customer.tld " + string(m.ID)}) {
		t.Fatalf("flush index %v", keys)
	}
	if due, ok, _ := f.s.NextDue(); !ok || !due.Equal(next) {
		t.Fatalf("NextDue = %v %v", due, ok)
	}
	if got := f.lease(); len(got) != 0 {
		t.Fatalf("leased before its time: %v", got)
	}

	mixed := newMsg("a@customer.tld", "c@other.tld")
	deferOnArrival(&mixed.Recipients[0])
	if err := f.s.Enqueue(mixed, []byte("y\r\n")); err != nil {
		t.Fatal(err)
	}
	f.check()
	if mixed.State != StateIncoming || !mixed.Due.Equal(f.clk.Now()) {
		t.Fatalf("mixed: state %s due %v", mixed.State, mixed.Due)
	}

	// A flush makes the deferred one due now.
	if res, err := f.s.Flush("customer.tld", false); err != nil || res.Messages != 2 {
		t.Fatalf("flush %+v %v", res, err)
	}
	f.check()
	got := f.lease()
	if len(got) != 2 || !got[m.ID].Recipients[0].Forced || !got[m.ID].Recipients[1].Forced {
		t.Fatalf("after flush leased %+v", got)
	}
}
