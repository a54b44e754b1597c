package store

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"
)

// TestRandomSequences drives the store through long random sequences of
// every operation, crash-reopens included, and runs Check after each
// step. A model of the live message set catches lost or resurrected mail.
func TestRandomSequences(t *testing.T) {
	steps := 700
	if testing.Short() {
		steps = 200
	}
	for seed := uint64(1); seed <= 2; seed++ {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) { randomRun(t, seed, steps) })
	}
}

var randDomains = []string{"customer.tld", "sub.customer.tld", "xcustomer.tld", "a.tld", "other.example", "[192.0.2.1]"}

type model struct {
	alive  map[ID]bool
	active map[ID]*Message
}

func (md *model) pick(r *rand.Rand) ID {
	if len(md.alive) == 0 {
		return NewID()
	}
	n := r.IntN(len(md.alive))
	for id := range md.alive {
		if n == 0 {
			return id
		}
		n--
	}
	return ""
}

func randomRun(t *testing.T, seed uint64, steps int) {
	f := open(t)
	r := rand.New(rand.NewPCG(seed, 42))
	md := &model{alive: map[ID]bool{}, active: map[ID]*Message{}}
	for step := 0; step < steps; step++ {
		op := r.IntN(100)
		desc := randomStep(t, f, r, md, op)
		if err := f.s.Check(); err != nil {
			t.Fatalf("seed %d step %d (%s): %v", seed, step, desc, err)
		}
	}
	st := f.stats()
	if n := st.Incoming + st.Active + st.Deferred + st.Hold; n != int64(len(md.alive)) {
		t.Fatalf("store has %d messages, model %d", n, len(md.alive))
	}
	for id := range md.alive {
		if _, err := f.s.Get(id); err != nil {
			t.Fatalf("model message %s: %v", id, err)
		}
	}
}

func randomStep(t *testing.T, f *fixture, r *rand.Rand, md *model, op int) string {
	t.Helper()
	must := func(err error) {
		t.Helper()
		if err != nil && !errors.Is(err, ErrNotFound) && !errors.Is(err, ErrNotActive) {
			t.Fatalf("op %d: %v", op, err)
		}
	}
	switch {
	case op < 25:
		m := newMsg()
		for i := 0; i <= r.IntN(3); i++ {
			m.Recipients = append(m.Recipients, Recipient{Addr: fmt.Sprintf("u%d@%s", i, randDomains[r.IntN(len(randDomains))])})
		}
		must(f.s.Enqueue(m, []byte("body")))
		md.alive[m.ID] = true
		return "enqueue"
	case op < 40:
		ms, err := f.s.Lease(f.clk.Now(), 1+r.IntN(5))
		must(err)
		for _, m := range ms {
			md.active[m.ID] = m
		}
		return "lease"
	case op < 60:
		// Every active message is finished at once, from its own
		// goroutine, so that the Finishes share Batch commits; half the
		// time a Finish that must fail (a message that is not active)
		// joins them, which makes bbolt run the others again.
		if len(md.active) == 0 {
			return "finish-none"
		}
		type job struct {
			id  ID
			fin Finish
			err error
		}
		var jobs []*job
		for id, m := range md.active {
			delete(md.active, id)
			var fin Finish
			for i := range m.Recipients {
				switch r.IntN(4) {
				case 0:
					fin.Outcomes = append(fin.Outcomes, Outcome{Rcpt: i, Result: RcptDelivered})
				case 1:
					fin.Outcomes = append(fin.Outcomes, Outcome{Rcpt: i, Result: RcptBounced})
				case 2:
					fin.Outcomes = append(fin.Outcomes, Outcome{Rcpt: i, Result: RcptPending,
						NextAttempt: f.clk.Now().Add(time.Duration(r.IntN(3600)) * time.Second)})
				}
			}
			if r.IntN(4) == 0 {
				b := &Message{Recipients: []Recipient{{Addr: "sender@example.org"}}}
				fin.Bounces = []NewMessage{{Msg: b, Body: []byte("dsn")}}
			}
			jobs = append(jobs, &job{id: id, fin: fin})
		}
		var bad *job
		if r.IntN(2) == 0 {
			id := md.pick(r)
			for _, j := range jobs {
				if j.id == id {
					id = NewID()
				}
			}
			bad = &job{id: id, fin: Finish{Bounces: []NewMessage{{
				Msg: &Message{Recipients: []Recipient{{Addr: "never@example.org"}}}, Body: []byte("x")}}}}
		}
		var wg sync.WaitGroup
		for _, j := range append(append([]*job(nil), jobs...), bad) {
			if j == nil {
				continue
			}
			wg.Add(1)
			go func() { defer wg.Done(); j.err = f.s.Finish(j.id, j.fin) }()
		}
		wg.Wait()
		if bad != nil {
			if bad.err == nil {
				t.Fatalf("Finish of %s, not active, succeeded", bad.id)
			}
			if _, err := f.s.Get(bad.fin.Bounces[0].Msg.ID); !errors.Is(err, ErrNotFound) {
				t.Fatalf("bounce of a failed Finish was stored: %v", err)
			}
		}
		for _, j := range jobs {
			must(j.err)
			if j.err != nil {
				continue
			}
			for _, b := range j.fin.Bounces {
				md.alive[b.Msg.ID] = true
			}
			if g, gerr := f.s.Get(j.id); errors.Is(gerr, ErrNotFound) {
				delete(md.alive, j.id)
			} else if g.State == StateActive {
				t.Fatalf("still active after Finish")
			}
		}
		return fmt.Sprintf("finish x%d", len(jobs))
	case op < 65:
		for id := range md.active {
			delete(md.active, id)
			must(f.s.Unlease(id))
			return "unlease"
		}
		return "unlease-none"
	case op < 70:
		_, err := f.s.Hold(md.pick(r))
		must(err)
		return "hold"
	case op < 75:
		_, err := f.s.Release(md.pick(r))
		must(err)
		return "release"
	case op < 78:
		_, err := f.s.Requeue(md.pick(r))
		must(err)
		return "requeue"
	case op < 82:
		id := md.pick(r)
		_, err := f.s.Delete(id)
		must(err)
		delete(md.alive, id)
		delete(md.active, id)
		return "delete"
	case op < 90:
		_, err := f.s.Flush(randDomains[r.IntN(len(randDomains))], r.IntN(2) == 0)
		must(err)
		return "flush"
	case op < 92:
		_, err := f.s.FlushAll()
		must(err)
		return "flushall"
	case op < 94:
		_, err := f.s.FlushID(md.pick(r))
		must(err)
		return "flushid"
	case op < 98:
		f.clk.Add(time.Duration(r.IntN(1800)) * time.Second)
		return "tick"
	default:
		if r.IntN(4) == 0 { // policy change: the index is rebuilt at Open
			if f.o.PolicyKey == "tld" {
				f.o.Eligible, f.o.PolicyKey = func(d string) bool { return d == "other.example" }, "other"
			} else {
				f.o.Eligible, f.o.PolicyKey = eligibleTLD, "tld"
			}
		}
		if r.IntN(2) == 0 {
			f.crash()
		} else {
			f.reopen()
		}
		md.active = map[ID]*Message{}
		return "reopen"
	}
}
