package control

import (
	"encoding/json"
	"errors"
	"net/http"
	"strings"

	"github.com/holdfast-mta/holdfast/flush"
	"github.com/holdfast-mta/holdfast/internal/addr"
	"github.com/holdfast-mta/holdfast/store"
)

// maxTracked bounds the recipients flush --wait follows.
const maxTracked = 100000

// flush carries out a flush request (postqueue -s / -f / -i) and, with
// Wait, follows the flushed recipients until each has an outcome.
func (s *Server) flush(w http.ResponseWriter, r *http.Request) error {
	var req FlushRequest
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20)).Decode(&req); err != nil {
		return errf(http.StatusBadRequest, CodeBadRequest, "bad request: %v", err)
	}
	bodyRead(w)
	var watch *watcher
	if req.Wait {
		watch = s.o.Metrics.watch()
		defer s.o.Metrics.unwatch(watch)
	}
	var track *tracker
	res, err := s.doFlush(req, &track)
	if err != nil {
		return err
	}
	st := FlushStatus{Messages: res.Messages, Active: res.Active}
	out := newLines(w)
	if !req.Wait || track == nil {
		st.End = true
		return out.send(st)
	}
	return s.follow(r.Context(), func(st FlushStatus) error { return out.send(st) }, track, watch, st, req.WaitFor)
}

// doFlush validates the request and calls the flush service. With Wait it
// first notes the recipients that the flush concerns.
func (s *Server) doFlush(req FlushRequest, track **tracker) (store.FlushResult, error) {
	switch {
	case req.All:
		if req.Wait {
			*track = s.newTracker("", false)
		}
		return s.o.Flush.FlushAll()
	case req.ID != "":
		id, err := store.ParseID(req.ID)
		if err != nil {
			// Not one of our IDs, so not queued: Postfix's postqueue -i
			// succeeds silently for a nonexistent ID.
			return store.FlushResult{}, nil
		}
		if req.Wait {
			*track = s.trackID(id)
		}
		res, err := s.o.Flush.FlushID(id)
		if errors.Is(err, store.ErrNotFound) {
			return store.FlushResult{}, nil // Postfix: a nonexistent ID succeeds silently
		}
		return res, err
	}
	// The flush service checks eligibility and counts the request; the
	// syntax is checked here, as postqueue does (a request refused here
	// is counted by the service too: Invalid).
	site := req.Site
	if !flush.ValidSite(site) {
		s.o.Flush.Invalid()
		return store.FlushResult{}, errf(http.StatusBadRequest, CodeInvalidSite,
			"Cannot flush mail queue - invalid destination: %q", truncate(site))
	}
	if dest, err := addr.Domain(site); err == nil && req.Wait {
		*track = s.newTracker(dest, req.Subtree)
	}
	res, err := s.o.Flush.Flush(site, req.Subtree)
	if errors.Is(err, flush.ErrNotEligible) {
		return res, errf(http.StatusConflict, CodeNotEligible,
			"Flush service is not configured for destination %q", truncate(site))
	}
	return res, err
}

// truncate cuts a site name as postqueue does: 100 characters and "...".
func truncate(s string) string {
	if len(s) > 100 {
		return s[:100] + "..."
	}
	return s
}

// tracker follows the pending recipients a flush concerns.
type tracker struct {
	dest    string // "" for every destination
	subtree bool
	// rcpts: queue ID -> recipient address -> attempts before the flush.
	rcpts map[store.ID]map[string]int
	count int
}

// newTracker notes the pending recipients at dest (every destination when
// dest is ""; with subtree also its sub-domains, which costs a full scan).
func (s *Server) newTracker(dest string, subtree bool) *tracker {
	t := &tracker{dest: dest, subtree: subtree, rcpts: map[store.ID]map[string]int{}}
	f := store.Filter{Domain: dest}
	if subtree {
		f.Domain = ""
	}
	var after store.ID
	for t.count < maxTracked {
		page, next, err := s.o.Store.List(f, after, pageSize)
		if err != nil {
			break
		}
		for _, m := range page {
			t.add(m)
		}
		if next == "" {
			break
		}
		after = next
	}
	return t
}

func (s *Server) trackID(id store.ID) *tracker {
	t := &tracker{rcpts: map[store.ID]map[string]int{}}
	if m, err := s.o.Store.Get(id); err == nil {
		t.add(m)
	}
	return t
}

func (t *tracker) covers(a string) bool {
	if t.dest == "" {
		return true
	}
	d := addr.DomainOf(a)
	return d == t.dest || (t.subtree && strings.HasSuffix(d, "."+t.dest))
}

func (t *tracker) add(m *store.Message) {
	if m.State == store.StateHold {
		return
	}
	for _, r := range m.Recipients {
		if r.State != store.RcptPending || !t.covers(r.Addr) {
			continue
		}
		if t.rcpts[m.ID] == nil {
			t.rcpts[m.ID] = map[string]int{}
		}
		t.rcpts[m.ID][r.Addr] = r.Attempts
		t.count++
	}
}
