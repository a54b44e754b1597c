package control

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/holdfast-mta/holdfast/config"
	"github.com/holdfast-mta/holdfast/flush"
	"github.com/holdfast-mta/holdfast/follow"
	"github.com/holdfast-mta/holdfast/metrics"
	"github.com/holdfast-mta/holdfast/store"
)

// env is a control server on a real store in a temp dir.
type env struct {
	dir     string
	store   *store.Store
	cfg     *config.Config
	srv     *Server
	client  *Client
	metrics *metrics.Set
	feed    *follow.Feed
	sock    string
}

func newEnv(t *testing.T, set map[string]string, tweak ...func(*Options)) *env {
	t.Helper()
	dir := t.TempDir()
	c := config.Default()
	c.Set("myhostname", "relay.test")
	c.Set("fast_flush_domains", "customer.test")
	for k, v := range set {
		c.Set(k, v)
	}
	p, err := flush.New(c)
	if err != nil {
		t.Fatal(err)
	}
	s, err := store.Open(filepath.Join(dir, "queue.db"), store.Options{NoSync: true, Eligible: p.Eligible, PolicyKey: p.Key()})
	if err != nil {
		t.Fatal(err)
	}
	log := zerolog.New(zerolog.NewTestWriter(t))
	m := metrics.New(s.Stats)
	feed := follow.NewFeed()
	svc := flush.NewService(p, s, nil, log)
	svc.SetEvents(m)
	o := Options{Store: s, Flush: svc, Config: c, Log: log, Events: m, Feed: feed}
	for _, f := range tweak {
		f(&o)
	}
	srv, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "control.sock")
	l, err := Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(l) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
		if err := s.Check(); err != nil {
			t.Errorf("store check: %v", err)
		}
		s.Close()
	})
	return &env{dir: dir, store: s, cfg: c, srv: srv, client: NewClient(sock), metrics: m, feed: feed, sock: sock}
}

// enqueue queues a message to rcpts and, with reason, defers it once.
func (e *env) enqueue(t *testing.T, sender string, reason string, rcpts ...string) store.ID {
	t.Helper()
	// Queue IDs sort by the millisecond, then by random bits: a message of
	// its own millisecond sorts after those queued before it, as the
	// listing tests expect.
	for ms := time.Now().UnixMilli(); time.Now().UnixMilli() == ms; {
		time.Sleep(100 * time.Microsecond)
	}
	m := &store.Message{ID: store.NewID(), Sender: sender}
	for _, r := range rcpts {
		m.Recipients = append(m.Recipients, store.Recipient{Addr: r})
	}
	if err := e.store.Enqueue(m, []byte("Subject: test\r\n\r\nbody\r\n")); err != nil {
		t.Fatal(err)
	}
	if reason != "" {
		e.deferAll(t, m.ID, reason)
	}
	return m.ID
}

// deferAll leases the message and defers every recipient with reason.
func (e *env) deferAll(t *testing.T, id store.ID, reason string) {
	t.Helper()
	leased, err := e.store.Lease(time.Now().Add(time.Hour), 1000)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range leased {
		var f store.Finish
		for i := range m.Recipients {
			f.Outcomes = append(f.Outcomes, store.Outcome{Rcpt: i, Result: store.RcptPending,
				Reply: reason, DSN: "4.4.1", NextAttempt: time.Now().Add(time.Hour)})
		}
		if m.ID != id {
			if err := e.store.Unlease(m.ID); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := e.store.Finish(m.ID, f); err != nil {
			t.Fatal(err)
		}
	}
}

func (e *env) list(t *testing.T, f Filter) []*Message {
	t.Helper()
	var out []*Message
	if _, err := e.client.List(context.Background(), f, "", 0, func(m *Message) error {
		out = append(out, m)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestListFiltersAndPages(t *testing.T) {
	e := newEnv(t, nil)
	a := e.enqueue(t, "a@sender.test", "deferred transport", "x@customer.test")
	b := e.enqueue(t, "b@sender.test", "", "y@other.test")
	c := e.enqueue(t, "", "connect to mx: Connection refused", "z@customer.test", "w@other.test")
	got := e.list(t, Filter{})
	if len(got) != 3 || got[0].ID != string(a) || got[1].ID != string(b) || got[2].ID != string(c) {
		t.Fatalf("list = %v", ids(got))
	}
	if got[0].Queue != "deferred" || got[0].Recipients[0].Reason != "deferred transport" {
		t.Errorf("first = %+v", got[0])
	}
	for _, tc := range []struct {
		f    Filter
		want []store.ID
	}{
		{Filter{States: []string{"deferred"}}, []store.ID{a, c}},
		{Filter{States: []string{"incoming"}}, []store.ID{b}},
		{Filter{Domain: "customer.test"}, []store.ID{a, c}},
		{Filter{Sender: "b@"}, []store.ID{b}},
		{Filter{Recipient: "w@other"}, []store.ID{c}},
		{Filter{OlderThan: "1h"}, nil},
	} {
		if g := ids(e.list(t, tc.f)); fmt.Sprint(g) != fmt.Sprint(tc.want) {
			t.Errorf("list %+v = %v, want %v", tc.f, g, tc.want)
		}
	}
	// Cursor pagination: one at a time.
	var seen []string
	after := ""
	for i := 0; i < 5; i++ {
		next, err := e.client.List(context.Background(), Filter{}, after, 1, func(m *Message) error {
			seen = append(seen, m.ID)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if next == "" {
			break
		}
		after = next
	}
	if len(seen) != 3 || seen[2] != string(c) {
		t.Errorf("paged = %v", seen)
	}
	if _, err := e.client.List(context.Background(), Filter{States: []string{"bogus"}}, "", 0, func(*Message) error { return nil }); !isCode(err, CodeBadRequest) {
		t.Errorf("bad state err = %v", err)
	}
}

func ids(ms []*Message) []store.ID {
	var out []store.ID
	for _, m := range ms {
		out = append(out, store.ID(m.ID))
	}
	return out
}

func isCode(err error, code string) bool {
	var ae *Error
	return errors.As(err, &ae) && ae.Code == code
}

func TestShowAndOperations(t *testing.T) {
	e := newEnv(t, nil)
	a := e.enqueue(t, "a@sender.test", "deferred transport", "x@customer.test")
	b := e.enqueue(t, "b@sender.test", "deferred transport", "y@customer.test")
	ctx := context.Background()
	s, err := e.client.Show(ctx, string(a))
	if err != nil {
		t.Fatal(err)
	}
	if s.Message.Sender != "a@sender.test" || !bytes.Contains(s.Body, []byte("Subject: test")) {
		t.Errorf("show = %+v %q", s.Message, s.Body)
	}
	if _, err := e.client.Show(ctx, "aaaaaaaaaaaa"); !isCode(err, CodeNotFound) {
		t.Errorf("show missing: %v", err)
	}
	p, err := e.client.Operate(ctx, "hold", OpRequest{IDs: []string{string(a), "not-an-id"}}, nil)
	if err != nil || p.Done != 1 || !p.End {
		t.Fatalf("hold = %+v, %v", p, err)
	}
	if got := ids(e.list(t, Filter{States: []string{"hold"}})); fmt.Sprint(got) != fmt.Sprint([]store.ID{a}) {
		t.Errorf("held = %v", got)
	}
	// Flush does not touch held mail.
	st, err := e.client.Flush(ctx, FlushRequest{Site: "customer.test"}, nil)
	if err != nil || st.Messages != 1 {
		t.Errorf("flush = %+v, %v", st, err)
	}
	p, err = e.client.Operate(ctx, "release", OpRequest{All: true}, nil)
	if err != nil || p.Done != 1 {
		t.Fatalf("release ALL = %+v, %v", p, err)
	}
	p, err = e.client.Operate(ctx, "requeue", OpRequest{All: true, Filter: Filter{Sender: "b@"}}, nil)
	if err != nil || p.Done != 1 {
		t.Fatalf("requeue by sender = %+v, %v", p, err)
	}
	m, err := e.store.Get(b)
	if err != nil || m.State != store.StateIncoming {
		t.Errorf("requeued state = %v, %v", m, err)
	}
	// Explicit IDs limited to a queue (postsuper -d ID hold).
	p, err = e.client.Operate(ctx, "delete", OpRequest{IDs: []string{string(a), string(b)}, Filter: Filter{States: []string{"hold"}}}, nil)
	if err != nil || p.Done != 0 {
		t.Fatalf("delete in hold = %+v, %v", p, err)
	}
	p, err = e.client.Operate(ctx, "delete", OpRequest{All: true}, nil)
	if err != nil || p.Done != 2 {
		t.Fatalf("delete ALL = %+v, %v", p, err)
	}
	if _, err := e.client.Operate(ctx, "explode", OpRequest{All: true}, nil); !isCode(err, CodeNotFound) {
		t.Errorf("unknown op: %v", err)
	}
}

// TestBulkChunks runs a bulk operation in many small chunks and checks
// the progress stream.
func TestBulkChunks(t *testing.T) {
	e := newEnv(t, nil)
	e.srv.chunk = 7
	for i := 0; i < 50; i++ {
		e.enqueue(t, "a@sender.test", "", fmt.Sprintf("u%d@customer.test", i))
	}
	var lines []Progress
	p, err := e.client.Operate(context.Background(), "hold", OpRequest{All: true}, func(p Progress) { lines = append(lines, p) })
	if err != nil || p.Done != 50 || p.Total != 50 {
		t.Fatalf("hold ALL = %+v, %v", p, err)
	}
	if len(lines) < 7 {
		t.Errorf("progress lines = %d, want one per chunk", len(lines))
	}
	st, _ := e.store.Stats()
	if st.Hold != 50 {
		t.Errorf("stats = %+v", st)
	}
}

func TestFlushReplies(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	e.enqueue(t, "a@sender.test", "deferred transport", "x@customer.test")
	for _, tc := range []struct {
		req  FlushRequest
		code string
		msg  string
	}{
		{FlushRequest{Site: "bad..domain"}, CodeInvalidSite, `Cannot flush mail queue - invalid destination: "bad..domain"`},
		{FlushRequest{Site: "not.a.customer"}, CodeNotEligible, `Flush service is not configured for destination "not.a.customer"`},
	} {
		_, err := e.client.Flush(ctx, tc.req, nil)
		if !isCode(err, tc.code) || err.Error() != tc.msg {
			t.Errorf("flush %+v = %v, want %s %q", tc.req, err, tc.code, tc.msg)
		}
	}
	if st, err := e.client.Flush(ctx, FlushRequest{ID: "NOSUCHID"}, nil); err != nil || st.Messages != 0 {
		t.Errorf("flush -i NOSUCHID = %+v, %v", st, err)
	}
	if st, err := e.client.Flush(ctx, FlushRequest{All: true}, nil); err != nil || st.Messages != 1 {
		t.Errorf("flush all = %+v, %v", st, err)
	}
}

// TestFlushWait follows a flush while a fake delivery loop leases the
// flushed mail and delivers, defers or bounces each recipient.
func TestFlushWait(t *testing.T) {
	e := newEnv(t, map[string]string{"fast_flush_domains": "customer.test"})
	e.enqueue(t, "a@sender.test", "deferred transport", "ok@customer.test")
	e.enqueue(t, "a@sender.test", "deferred transport", "again@customer.test")
	e.enqueue(t, "a@sender.test", "deferred transport", "bad@customer.test", "ok2@customer.test")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		fakeDelivery(ctx, e)
	}()
	var lines int
	st, err := e.client.Flush(ctx, FlushRequest{Site: "customer.test", Wait: true, WaitFor: 20 * time.Second},
		func(FlushStatus) { lines++ })
	cancel()
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	if st.Tracked != 4 || st.Delivered != 2 || st.Deferred != 1 || st.Bounced != 1 || st.Pending != 0 || st.TimedOut {
		t.Errorf("final = %+v", st)
	}
}

// fakeDelivery plays the scheduler: recipients named ok* are delivered,
// bad* bounced, others deferred; outcomes go to the feed.
func fakeDelivery(ctx context.Context, e *env) {
	for ctx.Err() == nil {
		leased, err := e.store.Lease(time.Now(), 10)
		if err != nil {
			return
		}
		for _, m := range leased {
			var f store.Finish
			var statuses []string
			for i, r := range m.Recipients {
				o := store.Outcome{Rcpt: i, Result: store.RcptPending, Reply: "try later", NextAttempt: time.Now().Add(time.Hour)}
				status := "deferred"
				switch {
				case strings.HasPrefix(r.Addr, "ok"):
					o.Result, status = store.RcptDelivered, "sent"
				case strings.HasPrefix(r.Addr, "bad"):
					o.Result, status = store.RcptBounced, "bounced"
				}
				f.Outcomes = append(f.Outcomes, o)
				statuses = append(statuses, status)
			}
			e.store.Finish(m.ID, f)
			for i, r := range m.Recipients {
				e.feed.Outcome(m.ID, r.Addr, statuses[i])
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// accepted reads holdfast_messages_total{status="accepted"}: local
// submission is counted from its acceptance event (package accept).
func accepted(t *testing.T, m *metrics.Set) float64 {
	t.Helper()
	fams, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() != "holdfast_messages_total" {
			continue
		}
		for _, mt := range f.Metric {
			for _, l := range mt.Label {
				if l.GetName() == "status" && l.GetValue() == "accepted" {
					return mt.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

func TestSubmit(t *testing.T) {
	e := newEnv(t, map[string]string{"message_size_limit": "1000"})
	ctx := context.Background()
	id, err := e.client.Submit(ctx, "", false, []string{"x@customer.test", "localuser"}, strings.NewReader("Subject: hi\r\n\r\nhello\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	m, err := e.store.Get(store.ID(id))
	if err != nil {
		t.Fatal(err)
	}
	if m.Sender != "root@relay.test" || m.Recipients[1].Addr != "localuser@relay.test" || m.Protocol != "LOCAL" {
		t.Errorf("envelope = %+v", m)
	}
	if n := accepted(t, e.metrics); n != 1 {
		t.Errorf("holdfast_messages_total{status=accepted} = %v after a submission, want 1", n)
	}
	body, _ := e.store.Body(store.ID(id))
	for _, want := range []string{"Received: by relay.test (holdfast) with LOCAL id " + id + ";\r\n\t",
		"\r\nDate: ", "\r\nFrom: root@relay.test\r\n", "\r\nMessage-Id: <", "\r\nSubject: hi\r\n\r\nhello\r\n"} {
		if !bytes.Contains(body, []byte(want)) {
			t.Errorf("body lacks %q:\n%s", want, body)
		}
	}
	if m.SMTPUTF8 {
		t.Error("ASCII submission marked SMTPUTF8")
	}
	// smtputf8_autodetect_classes = sendmail: UTF-8 in the envelope or the
	// header section marks the message SMTPUTF8.
	for _, tc := range []struct{ rcpt, content string }{
		{"u@café.test", "Subject: hi\r\n\r\nhello\r\n"},
		{"x@customer.test", "Subject: café\r\n\r\nhello\r\n"},
	} {
		id, err := e.client.Submit(ctx, "", false, []string{tc.rcpt}, strings.NewReader(tc.content))
		if err != nil {
			t.Fatal(err)
		}
		if m, err := e.store.Get(store.ID(id)); err != nil || !m.SMTPUTF8 {
			t.Errorf("submission to %s, %q: SMTPUTF8 not set (%v)", tc.rcpt, tc.content, err)
		}
	}
	// Bare CR and bare LF are queued as CRLF, as over SMTP.
	id, err = e.client.Submit(ctx, "", false, []string{"x@customer.test"}, strings.NewReader("Subject: cr\n\nhello\r.\rworld\n"))
	if err != nil {
		t.Fatal(err)
	}
	body, _ = e.store.Body(store.ID(id))
	if !bytes.HasSuffix(body, []byte("\r\nSubject: cr\r\n\r\nhello\r\n.\r\nworld\r\n")) ||
		bytes.Count(body, []byte("\r")) != bytes.Count(body, []byte("\n")) {
		t.Errorf("body not made CRLF: %q", body)
	}
	if _, err := e.client.Submit(ctx, "", true, []string{"x@customer.test"}, strings.NewReader(strings.Repeat("x", 2000))); !isCode(err, CodeTooBig) {
		t.Errorf("big submit: %v", err)
	}
	if _, err := e.client.Submit(ctx, "a@b", true, nil, strings.NewReader("x")); !isCode(err, CodeBadRequest) {
		t.Errorf("no rcpt submit: %v", err)
	}
}

// delay_warning_time: local submission sets WarnAt for a non-null sender
// only.
func TestSubmitDelayWarning(t *testing.T) {
	e := newEnv(t, map[string]string{"delay_warning_time": "1h"})
	ctx := context.Background()
	for _, sender := range []string{"a@sender.test", ""} {
		id, err := e.client.Submit(ctx, sender, true, []string{"x@customer.test"}, strings.NewReader("Subject: hi\r\n\r\nhello\r\n"))
		if err != nil {
			t.Fatal(err)
		}
		m, err := e.store.Get(store.ID(id))
		if err != nil {
			t.Fatal(err)
		}
		want := m.Arrival.Add(time.Hour)
		if sender == "" {
			want = time.Time{}
		}
		if !m.WarnAt.Equal(want) {
			t.Errorf("sender <%s>: WarnAt %v, want %v (arrival %v)", sender, m.WarnAt, want, m.Arrival)
		}
	}
}

// TestPolicy checks the access classes with injected uids (the CLI test
// in cmd/holdfast runs a client as another user for real).
func TestPolicy(t *testing.T) {
	dir := t.TempDir()
	list := filepath.Join(dir, "flushers")
	os.WriteFile(list, []byte("# who may flush\nnobody\n"), 0o644)
	c := config.Default()
	c.Set("authorized_flush_users", "!daemon, "+list)
	c.Set("authorized_mailq_users", "inline:{root=x, nobody=x}")
	p, err := NewPolicy(c, 4242)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		class Class
		uid   int
		want  string
	}{
		{Admin, 0, ""}, {Admin, 4242, ""}, {FlushOp, 4242, ""},
		{Admin, 65534, "User nobody(65534) is not allowed to change the mail queue: root or the daemon's user only"},
		{FlushOp, 65534, ""},
		{FlushOp, 1, "User daemon(1) is not allowed to flush the mail queue"},
		{FlushOp, 2, "User bin(2) is not allowed to flush the mail queue"},
		{Mailq, 65534, ""},
		{Mailq, 2, "User bin(2) is not allowed to view the mail queue"},
		{Submit, 2, ""}, {Anyone, 2, ""},
	} {
		err := p.Check(tc.class, tc.uid)
		got := ""
		if err != nil {
			got = err.Error()
		}
		if got != tc.want {
			t.Errorf("Check(%d, %d) = %q, want %q", tc.class, tc.uid, got, tc.want)
		}
	}
}

// A plain list of user names, as Postfix's main.cf allows
// (authorized_flush_users = root, mail), loads and is enforced by name.
func TestPolicyUserNames(t *testing.T) {
	c, err := config.Parse("main.cf", []byte("authorized_flush_users = root, mail\nauthorized_mailq_users = mail bin\n"))
	if err != nil {
		t.Fatal(err)
	}
	p, err := NewPolicy(c, 4242)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		class Class
		uid   int
		want  string
	}{
		{FlushOp, 0, ""}, {FlushOp, 8, ""},
		{FlushOp, 2, "User bin(2) is not allowed to flush the mail queue"},
		{FlushOp, 65534, "User nobody(65534) is not allowed to flush the mail queue"},
		{Mailq, 2, ""}, {Mailq, 1, "User daemon(1) is not allowed to view the mail queue"},
		{Submit, 65534, ""}, // default static:anyone
	} {
		got := ""
		if err := p.Check(tc.class, tc.uid); err != nil {
			got = err.Error()
		}
		if got != tc.want {
			t.Errorf("Check(%d, %d) = %q, want %q", tc.class, tc.uid, got, tc.want)
		}
	}
}

func TestListenStaleSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	if _, err := Listen(path); err == nil || !strings.Contains(err.Error(), "another holdfast") {
		t.Errorf("Listen on live socket: %v", err)
	}
	l.Close()
	l2, err := Listen(path)
	if err != nil {
		t.Fatalf("Listen over stale socket: %v", err)
	}
	defer l2.Close()
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o660 {
		t.Errorf("socket mode = %v, %v", fi.Mode(), err)
	}
	os.WriteFile(path+".file", nil, 0o644)
	if _, err := Listen(path + ".file"); err == nil {
		t.Error("Listen over a regular file succeeded")
	}
}

func TestDaemonDown(t *testing.T) {
	c := NewClient(filepath.Join(t.TempDir(), "none.sock"))
	_, err := c.Health(context.Background())
	var de *DownError
	if !errors.As(err, &de) || !strings.Contains(err.Error(), "is holdfast running?") {
		t.Errorf("err = %v", err)
	}
}

func TestBackupWhileEnqueueing(t *testing.T) {
	e := newEnv(t, nil)
	for i := 0; i < 20; i++ {
		e.enqueue(t, "a@sender.test", "", fmt.Sprintf("u%d@customer.test", i))
	}
	before := e.list(t, Filter{})
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for w := 0; w < 20; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ctx.Err() == nil && i < 200; i++ {
				m := &store.Message{ID: store.NewID(), Sender: "c@sender.test", Recipients: []store.Recipient{{Addr: "v@customer.test"}}}
				if err := e.store.Enqueue(m, []byte("Subject: x\r\n\r\nx\r\n")); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	out := filepath.Join(e.dir, "backup.db")
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	n, err := e.client.Backup(context.Background(), f)
	f.Close()
	cancel()
	wg.Wait()
	if err != nil || n == 0 {
		t.Fatalf("backup = %d, %v", n, err)
	}
	b, err := store.Open(out, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if err := b.Check(); err != nil {
		t.Errorf("backup check: %v", err)
	}
	for _, m := range before {
		if _, err := b.Get(store.ID(m.ID)); err != nil {
			t.Errorf("backup lacks %s: %v", m.ID, err)
		}
	}
}

func TestParseAge(t *testing.T) {
	for in, want := range map[string]time.Duration{"90": 90 * time.Second, "90m": 90 * time.Minute,
		"12h": 12 * time.Hour, "3d": 72 * time.Hour, "1w": 7 * 24 * time.Hour, "1h30m": 90 * time.Minute} {
		if got, err := ParseAge(in); err != nil || got != want {
			t.Errorf("ParseAge(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "x", "-5m", "3y"} {
		if _, err := ParseAge(in); err == nil {
			t.Errorf("ParseAge(%q) succeeded", in)
		}
	}
}

func TestHealthStatsConfig(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	h, err := e.client.Health(ctx)
	if err != nil || !h.OK || h.PID != os.Getpid() {
		t.Errorf("health = %+v, %v", h, err)
	}
	e.enqueue(t, "a@sender.test", "", "x@customer.test")
	st, err := e.client.Stats(ctx)
	if err != nil || st.Incoming != 1 || st.Bytes == 0 {
		t.Errorf("stats = %+v, %v", st, err)
	}
	cfg, err := e.client.Config(ctx, "myhostname", "fast_flush_domains")
	if err != nil || cfg["myhostname"] != "relay.test" || cfg["fast_flush_domains"] != "customer.test" {
		t.Errorf("config = %v, %v", cfg, err)
	}
	if _, err := e.client.Config(ctx); !isCode(err, CodeBadRequest) {
		t.Errorf("config without names: %v", err)
	}
	if err := e.client.Check(ctx); err != nil {
		t.Errorf("check: %v", err)
	}
}
