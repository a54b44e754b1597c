package control

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/holdfast-mta/holdfast/store"
)

// pageSize is how many messages one store.List call returns; a listing or
// bulk operation never holds more than this many envelopes.
const pageSize = 500

// filterFromQuery reads state (repeatable or comma separated), domain,
// sender, recipient and older_than.
func filterFromQuery(r *http.Request) Filter {
	q := r.URL.Query()
	var f Filter
	for _, v := range q["state"] {
		for _, s := range strings.Split(v, ",") {
			if s = strings.TrimSpace(s); s != "" {
				f.States = append(f.States, s)
			}
		}
	}
	f.Domain, f.Sender, f.Recipient = q.Get("domain"), q.Get("sender"), q.Get("recipient")
	f.OlderThan = q.Get("older_than")
	return f
}

// list streams the matching messages as JSON lines in arrival order,
// starting after ?after= and stopping after ?limit= messages (0: all); the
// last line carries End and, when cut by the limit, the Next cursor.
func (s *Server) list(w http.ResponseWriter, r *http.Request) error {
	f, err := filterFromQuery(r).storeFilter(s.o.Now())
	if err != nil {
		return errf(http.StatusBadRequest, CodeBadRequest, "%s", err)
	}
	after := store.ID(r.URL.Query().Get("after"))
	limit := 0
	if v := r.URL.Query().Get("limit"); v != "" {
		if limit, err = strconv.Atoi(v); err != nil || limit < 0 {
			return errf(http.StatusBadRequest, CodeBadRequest, "invalid limit %q", v)
		}
	}
	out := newLines(w)
	sent := 0
	for {
		n := pageSize
		if limit > 0 && limit-sent < n {
			n = limit - sent
		}
		page, next, err := s.o.Store.List(f, after, n)
		if err != nil {
			return out.send(ListLine{End: true, Error: err.Error()})
		}
		for _, m := range page {
			v := View(m)
			if err := out.send(ListLine{Message: &v}); err != nil {
				return nil // client went away
			}
			sent++
		}
		if next == "" {
			return out.send(ListLine{End: true})
		}
		after = next
		if limit > 0 && sent >= limit {
			return out.send(ListLine{End: true, Next: string(next)})
		}
		if r.Context().Err() != nil {
			return nil
		}
	}
}

func (s *Server) show(w http.ResponseWriter, r *http.Request) error {
	id, err := store.ParseID(r.PathValue("id"))
	if err != nil {
		return errf(http.StatusBadRequest, CodeBadRequest, "invalid queue id: %s", r.PathValue("id"))
	}
	m, err := s.o.Store.Get(id)
	if errors.Is(err, store.ErrNotFound) {
		return errf(http.StatusNotFound, CodeNotFound, "%s: no such message", id)
	}
	if err != nil {
		return err
	}
	// The body is streamed chunk by chunk into the JSON (Show's encoding:
	// base64), so a 10 MB message is never held whole. Its first chunk is
	// read before anything is written, so that a missing body is a 404.
	body := s.o.Store.BodyReader(id)
	if _, err := body.Read(nil); errors.Is(err, store.ErrNotFound) {
		return errf(http.StatusNotFound, CodeNotFound, "%s: no such message", id)
	} else if err != nil && err != io.EOF {
		return err
	}
	view, err := json.Marshal(View(m))
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprintf(w, `{"message":%s,"body":"`, view)
	enc := base64.NewEncoder(base64.StdEncoding, w)
	if _, err := body.WriteTo(enc); err != nil {
		// Too late for a status: the client sees JSON cut short.
		s.o.Log.Warn().Str("queue_id", string(id)).Err(err).Msg("queue show: body read failed")
		return nil
	}
	enc.Close()
	io.WriteString(w, "\"}\n")
	return nil
}

// ops maps an operation name to the store call and, for ALL and filters,
// the queues it applies to by default (postsuper's, reference spec §4.5).
var ops = map[string]struct {
	run    func(s *store.Store, ids ...store.ID) (int, error)
	states []store.State
	wakes  bool
}{
	"delete":  {(*store.Store).Delete, nil, false},
	"hold":    {(*store.Store).Hold, []store.State{store.StateIncoming, store.StateActive, store.StateDeferred}, false},
	"release": {(*store.Store).Release, []store.State{store.StateHold}, true},
	"requeue": {(*store.Store).Requeue, []store.State{store.StateIncoming, store.StateActive, store.StateDeferred, store.StateHold}, true},
}

// operate runs delete, hold, release or requeue over explicit IDs or over
// every message matching a filter, one transaction per chunk, streaming
// a Progress line per chunk.
func (s *Server) operate(w http.ResponseWriter, r *http.Request) error {
	op, ok := ops[r.PathValue("op")]
	if !ok {
		return errf(http.StatusNotFound, CodeNotFound, "unknown operation %q", r.PathValue("op"))
	}
	var req OpRequest
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<20)).Decode(&req); err != nil {
		return errf(http.StatusBadRequest, CodeBadRequest, "bad request: %v", err)
	}
	bodyRead(w)
	if !req.All && len(req.IDs) == 0 {
		return errf(http.StatusBadRequest, CodeBadRequest, "name queue ids or ALL")
	}
	f, err := req.Filter.storeFilter(s.o.Now())
	if err != nil {
		return errf(http.StatusBadRequest, CodeBadRequest, "%s", err)
	}
	if len(f.States) == 0 {
		f.States = op.states
	}
	out := newLines(w)
	var p Progress
	defer func() {
		if p.Done > 0 && op.wakes && s.o.Wake != nil {
			s.o.Wake()
		}
	}()
	apply := func(ids []store.ID) error {
		n, err := op.run(s.o.Store, ids...)
		p.Matched += len(ids)
		p.Done += n
		return err
	}
	if !req.All {
		p.Total = int64(len(req.IDs))
		for start := 0; start < len(req.IDs); start += s.chunk {
			end := min(start+s.chunk, len(req.IDs))
			ids := s.selectIDs(req.IDs[start:end], req.Filter.States, f.States)
			if err := apply(ids); err != nil {
				p.End, p.Error = true, err.Error()
				return out.send(p)
			}
			if err := out.send(p); err != nil {
				return nil
			}
		}
		p.End = true
		s.logOp(r, p)
		return out.send(p)
	}
	p.Total = s.estimate(f)
	return s.operateAll(r, out, f, apply, &p)
}

// operateAll pages through the filter's matches and applies the
// operation to each page, so memory stays bounded by the page size.
func (s *Server) operateAll(r *http.Request, out *lines, f store.Filter, apply func([]store.ID) error, p *Progress) error {
	var after store.ID
	for {
		page, next, err := s.o.Store.List(f, after, s.chunk)
		if err == nil && len(page) > 0 {
			ids := make([]store.ID, len(page))
			for i, m := range page {
				ids[i] = m.ID
			}
			err = apply(ids)
		}
		if err != nil {
			p.End, p.Error = true, err.Error()
			return out.send(p)
		}
		if next == "" || r.Context().Err() != nil {
			p.End = true
			s.logOp(r, *p)
			return out.send(*p)
		}
		if err := out.send(*p); err != nil {
			return nil
		}
		after = next
	}
}

// estimate is the number of messages in the filter's queues, for the
// progress bar; 0 when other criteria make it unknown.
func (s *Server) estimate(f store.Filter) int64 {
	if f.Domain != "" || f.Sender != "" || f.Recipient != "" || !f.OlderThan.IsZero() {
		return 0
	}
	st, err := s.o.Store.Stats()
	if err != nil {
		return 0
	}
	if len(f.States) == 0 {
		return st.Incoming + st.Active + st.Deferred + st.Hold
	}
	var n int64
	for _, x := range f.States {
		switch x {
		case store.StateIncoming:
			n += st.Incoming
		case store.StateActive:
			n += st.Active
		case store.StateDeferred:
			n += st.Deferred
		case store.StateHold:
			n += st.Hold
		}
	}
	return n
}

func (s *Server) logOp(r *http.Request, p Progress) {
	s.o.Log.Info().Str("event", r.PathValue("op")).Int("uid", peerFrom(r.Context()).UID).
		Int("matched", p.Matched).Int("done", p.Done).Msg("queue operation")
}

// selectIDs parses ids, dropping malformed ones and, when the request
// named queues, those in other queues (postsuper -d ID deferred).
func (s *Server) selectIDs(raw []string, named []string, states []store.State) []store.ID {
	ids := make([]store.ID, 0, len(raw))
	for _, v := range raw {
		id, err := store.ParseID(v)
		if err != nil {
			continue
		}
		if len(named) > 0 {
			m, err := s.o.Store.Get(id)
			if err != nil || !slices.Contains(states, m.State) {
				continue
			}
		}
		ids = append(ids, id)
	}
	return ids
}
