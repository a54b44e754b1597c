package control

import (
	"math"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/holdfast-mta/holdfast/internal/addr"
	"github.com/holdfast-mta/holdfast/store"
)

// ShapeOptions are qshape(1)'s options: sender domains instead of
// recipient domains (-s), parent-domain rows (-p, with -m), the number of
// age buckets (-b), the first bucket's limit in minutes (-t) and linear
// instead of doubling buckets (-l). States selects the queues (empty:
// incoming, active and deferred).
type ShapeOptions struct {
	States        []string
	Sender        bool
	Parents       bool
	MinSubdomains int
	Buckets       int
	Tick          int
	Linear        bool
}

// Shape is a queue's domain and age distribution, as qshape prints it:
// Heads are the column headings ("T", then each bucket's upper age limit
// in minutes, the last one open-ended "N+"), and each row has the total
// followed by one count per bucket. The first row is TOTAL; the others
// are sorted by total, largest first.
type Shape struct {
	Heads []string   `json:"heads"`
	Rows  []ShapeRow `json:"rows"`
}

// ShapeRow is one domain (parent domains start with ".") and its counts.
type ShapeRow struct {
	Domain string  `json:"domain"`
	Counts []int64 `json:"counts"`
}

// withDefaults fills qshape's defaults: 10 buckets of 5 minutes, doubling,
// parent rows for at least 5 sub-domains.
func (o ShapeOptions) withDefaults() ShapeOptions {
	if o.Buckets <= 0 {
		o.Buckets = 10
	}
	if o.Tick <= 0 {
		o.Tick = 5
	}
	if o.MinSubdomains <= 0 {
		o.MinSubdomains = 5
	}
	if len(o.States) == 0 {
		o.States = []string{"incoming", "active", "deferred"}
	}
	return o
}

func (o ShapeOptions) query() url.Values {
	q := url.Values{"state": o.States}
	set := func(name string, on bool, v string) {
		if on {
			q.Set(name, v)
		}
	}
	set("sender", o.Sender, "1")
	set("parents", o.Parents, "1")
	set("linear", o.Linear, "1")
	set("minsub", o.MinSubdomains > 0, strconv.Itoa(o.MinSubdomains))
	set("buckets", o.Buckets > 0, strconv.Itoa(o.Buckets))
	set("tick", o.Tick > 0, strconv.Itoa(o.Tick))
	return q
}

func shapeOptionsFrom(q url.Values) (ShapeOptions, error) {
	o := ShapeOptions{Sender: q.Get("sender") == "1", Parents: q.Get("parents") == "1",
		Linear: q.Get("linear") == "1"}
	for _, v := range q["state"] {
		for _, s := range strings.Split(v, ",") {
			if s = strings.TrimSpace(s); s != "" {
				o.States = append(o.States, s)
			}
		}
	}
	for name, p := range map[string]*int{"buckets": &o.Buckets, "tick": &o.Tick, "minsub": &o.MinSubdomains} {
		if v := q.Get(name); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n <= 0 || n > 1000 {
				return o, errf(http.StatusBadRequest, CodeBadRequest, "invalid %s %q", name, v)
			}
			*p = n
		}
	}
	return o.withDefaults(), nil
}

// shaper accumulates a Shape message by message.
type shaper struct {
	o      ShapeOptions
	now    time.Time
	counts map[string][]int64
	subs   map[string]int // parent domain -> distinct sub-domains seen
}

func newShaper(o ShapeOptions, now time.Time) *shaper {
	return &shaper{o: o, now: now, counts: map[string][]int64{}, subs: map[string]int{}}
}

// bucket is qshape's: [0, tick) minutes is bucket 1, then doubling (or
// linear) intervals, the last bucket open-ended.
func (s *shaper) bucket(arrival time.Time) int {
	m := s.now.Sub(arrival).Minutes() / float64(s.o.Tick)
	if m < 1 {
		return 1
	}
	b := 2 + int(math.Log2(m))
	if s.o.Linear {
		b = int(m + 1)
	}
	return min(b, s.o.Buckets)
}

// add counts one message: its sender's domain, or each recipient still
// to be delivered (qshape counts the recipients left in the queue file).
func (s *shaper) add(m *store.Message) {
	b := s.bucket(m.Arrival)
	if s.o.Sender {
		s.addAddr(m.Sender, b)
		return
	}
	for i := range m.Recipients {
		if r := &m.Recipients[i]; r.State == store.RcptPending {
			s.addAddr(r.Addr, b)
		}
	}
}

func (s *shaper) addAddr(a string, b int) {
	s.inc("TOTAL", b)
	d := "MAILER-DAEMON"
	if a != "" {
		d = strings.Trim(addr.Fold(a[strings.LastIndexByte(a, '@')+1:]), ".")
	}
	isNew := s.inc(d, b)
	for s.o.Parents {
		_, rest, ok := strings.Cut(strings.TrimPrefix(d, "."), ".")
		if !ok || !strings.Contains(rest, ".") {
			return // no parent rows for top-level domains
		}
		d = "." + rest
		if isNew {
			s.subs[d]++
		}
		isNew = s.inc(d, b)
	}
}

// inc counts one address in row d, bucket b; it reports whether the row
// is new.
func (s *shaper) inc(d string, b int) bool {
	c, ok := s.counts[d]
	if !ok {
		c = make([]int64, s.o.Buckets+1)
		s.counts[d] = c
	}
	c[0]++
	c[b]++
	return !ok
}

func (s *shaper) shape() *Shape {
	sh := &Shape{Heads: []string{"T"}}
	for i, t := 1, s.o.Tick; i <= s.o.Buckets; i, t = i+1, t+s.step(t) {
		if i == s.o.Buckets && i > 1 {
			sh.Heads = append(sh.Heads, sh.Heads[i-1]+"+")
			break
		}
		sh.Heads = append(sh.Heads, strconv.Itoa(t))
	}
	total := s.counts["TOTAL"]
	if total == nil {
		total = make([]int64, s.o.Buckets+1)
	}
	sh.Rows = append(sh.Rows, ShapeRow{Domain: "TOTAL", Counts: total})
	var rows []ShapeRow
	for d, c := range s.counts {
		if d == "TOTAL" || (strings.HasPrefix(d, ".") && s.subs[d] < s.o.MinSubdomains) {
			continue
		}
		rows = append(rows, ShapeRow{Domain: d, Counts: c})
	}
	slices.SortFunc(rows, func(a, b ShapeRow) int {
		if a.Counts[0] != b.Counts[0] {
			return int(b.Counts[0] - a.Counts[0])
		}
		if len(a.Domain) != len(b.Domain) {
			return len(a.Domain) - len(b.Domain)
		}
		return strings.Compare(a.Domain, b.Domain)
	})
	sh.Rows = append(sh.Rows, rows...)
	return sh
}

// step is how much the next bucket's limit grows: doubling, or one tick.
func (s *shaper) step(t int) int {
	if s.o.Linear {
		return s.o.Tick
	}
	return t
}

// shape answers GET /v1/shape: the distribution of the selected queues,
// read page by page like a listing.
func (s *Server) shape(w http.ResponseWriter, r *http.Request) error {
	o, err := shapeOptionsFrom(r.URL.Query())
	if err != nil {
		return err
	}
	f, err := Filter{States: o.States}.storeFilter(s.o.Now())
	if err != nil {
		return errf(http.StatusBadRequest, CodeBadRequest, "%s", err)
	}
	sh := newShaper(o, s.o.Now())
	var after store.ID
	for {
		page, next, err := s.o.Store.List(f, after, pageSize)
		if err != nil {
			return err
		}
		for _, m := range page {
			sh.add(m)
		}
		if next == "" {
			return writeJSON(w, sh.shape())
		}
		after = next
	}
}
