package control

import (
	"encoding/json"
	"errors"
	"net/http"

	"github.com/holdfast-mta/holdfast/flush"
	"github.com/holdfast-mta/holdfast/follow"
	"github.com/holdfast-mta/holdfast/internal/addr"
	"github.com/holdfast-mta/holdfast/store"
)

// flush carries out a flush request (postqueue -s / -f / -i) and, with
// Wait, follows the flushed recipients until each has an outcome.
func (s *Server) flush(w http.ResponseWriter, r *http.Request) error {
	var req FlushRequest
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20)).Decode(&req); err != nil {
		return errf(http.StatusBadRequest, CodeBadRequest, "bad request: %v", err)
	}
	bodyRead(w)
	var watch *follow.Watch
	if req.Wait {
		watch = s.o.Feed.Watch() // before the flush: no outcome missed
		defer watch.Close()
	}
	var track *follow.Tracker
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
	return watch.Follow(r.Context(), track, st, req.WaitFor, func(st FlushStatus) error { return out.send(st) })
}

// doFlush validates the request and calls the flush service. With Wait it
// first notes the recipients that the flush concerns.
func (s *Server) doFlush(req FlushRequest, track **follow.Tracker) (store.FlushResult, error) {
	switch {
	case req.All:
		if req.Wait {
			*track = follow.Track(s.o.Store, "", false)
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
			*track = follow.TrackID(s.o.Store, id)
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
		*track = follow.Track(s.o.Store, dest, req.Subtree)
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
