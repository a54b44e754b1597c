package control

import (
	"fmt"
	"strconv"
	"time"

	"github.com/holdfast-mta/holdfast/follow"
	"github.com/holdfast-mta/holdfast/internal/addr"
	"github.com/holdfast-mta/holdfast/store"
)

// Message is the API view of a queued message's envelope.
type Message struct {
	ID         string      `json:"id"`
	Queue      string      `json:"queue"`
	Arrival    time.Time   `json:"arrival"`
	Size       int64       `json:"size"`
	Sender     string      `json:"sender"`
	Recipients []Recipient `json:"recipients"`
	Due        time.Time   `json:"due,omitzero"`
	Expired    bool        `json:"expired,omitempty"`
	ClientAddr string      `json:"client_addr,omitempty"`
	ClientName string      `json:"client_name,omitempty"`
	Helo       string      `json:"helo,omitempty"`
	Protocol   string      `json:"protocol,omitempty"`
	EnvID      string      `json:"envid,omitempty"`
	SMTPUTF8   bool        `json:"smtputf8,omitempty"`
}

// Recipient is the API view of one envelope recipient.
type Recipient struct {
	Address      string    `json:"address"`
	Orig         string    `json:"orig_address,omitempty"`
	State        string    `json:"state"` // pending, delivered, bounced
	Reason       string    `json:"reason,omitempty"`
	DSN          string    `json:"dsn,omitempty"`
	RemoteMTA    string    `json:"remote_mta,omitempty"`
	Attempts     int       `json:"attempts"`
	NextAttempt  time.Time `json:"next_attempt,omitzero"`
	Forced       bool      `json:"forced,omitempty"`
	FlushPending bool      `json:"flush_pending,omitempty"`
}

// View converts a store message into its API form.
func View(m *store.Message) Message {
	v := Message{
		ID: string(m.ID), Queue: m.State.String(), Arrival: m.Arrival, Size: m.Size,
		Sender: m.Sender, Due: m.Due, Expired: m.Expired, ClientAddr: m.ClientAddr,
		ClientName: m.ClientName, Helo: m.Helo, Protocol: m.Protocol, EnvID: m.EnvID,
		SMTPUTF8: m.SMTPUTF8, Recipients: make([]Recipient, len(m.Recipients)),
	}
	for i, r := range m.Recipients {
		v.Recipients[i] = Recipient{
			Address: r.Addr, Orig: r.Orig, State: rcptState(r.State), Reason: r.Reply,
			DSN: r.DSN, RemoteMTA: r.RemoteMTA, Attempts: r.Attempts,
			NextAttempt: r.NextAttempt, Forced: r.Forced, FlushPending: r.FlushPending,
		}
	}
	return v
}

func rcptState(s store.RcptState) string {
	switch s {
	case store.RcptDelivered:
		return "delivered"
	case store.RcptBounced:
		return "bounced"
	}
	return "pending"
}

// ListLine is one line of a listing stream: a message, or the last line
// (End set) with the cursor to continue from when a limit cut it short.
type ListLine struct {
	Message *Message `json:"message,omitempty"`
	End     bool     `json:"end,omitempty"`
	Next    string   `json:"next,omitempty"`
	Error   string   `json:"error,omitempty"`
}

// Filter selects messages for a listing or a bulk operation.
type Filter struct {
	States    []string `json:"states,omitempty"`
	Domain    string   `json:"domain,omitempty"`
	Sender    string   `json:"sender,omitempty"`
	Recipient string   `json:"recipient,omitempty"`
	// OlderThan is an age such as "90m", "12h" or "3d".
	OlderThan string `json:"older_than,omitempty"`
}

// storeFilter turns f into the store's filter relative to now.
func (f Filter) storeFilter(now time.Time) (store.Filter, error) {
	var sf store.Filter
	for _, name := range f.States {
		st, ok := store.ParseState(name)
		if !ok {
			return sf, fmt.Errorf("unknown queue %q (incoming, active, deferred, hold)", name)
		}
		sf.States = append(sf.States, st)
	}
	sf.Domain = addr.Fold(f.Domain)
	sf.Sender, sf.Recipient = f.Sender, f.Recipient
	if f.OlderThan != "" {
		age, err := ParseAge(f.OlderThan)
		if err != nil {
			return sf, err
		}
		sf.OlderThan = now.Add(-age)
	}
	return sf, nil
}

// ParseAge reads an age: a number with an optional unit s, m, h, d or w
// (Postfix time units; a bare number is seconds), or a Go duration.
func ParseAge(s string) (time.Duration, error) {
	if s == "" {
		return 0, fmt.Errorf("empty age")
	}
	units := map[byte]time.Duration{'s': time.Second, 'm': time.Minute, 'h': time.Hour,
		'd': 24 * time.Hour, 'w': 7 * 24 * time.Hour}
	num, unit := s, time.Second
	if u, ok := units[s[len(s)-1]]; ok {
		num, unit = s[:len(s)-1], u
	}
	if n, err := strconv.ParseInt(num, 10, 64); err == nil && n >= 0 {
		return time.Duration(n) * unit, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("invalid age %q (e.g. 90m, 12h, 3d)", s)
	}
	return d, nil
}

// OpRequest names the messages a bulk operation (delete, hold, release,
// requeue) applies to: explicit IDs, or All messages matching Filter.
type OpRequest struct {
	IDs    []string `json:"ids,omitempty"`
	All    bool     `json:"all,omitempty"`
	Filter Filter   `json:"filter"`
}

// Progress is one line of a bulk operation's stream. Total is an estimate
// (0 when unknown); the last line has End set.
type Progress struct {
	Matched int    `json:"matched"`
	Done    int    `json:"done"`
	Total   int64  `json:"total,omitempty"`
	End     bool   `json:"end,omitempty"`
	Error   string `json:"error,omitempty"`
}

// FlushRequest asks for one flush: a Site (with Subtree for its
// sub-domains), All deferred mail, or one message by ID.
type FlushRequest struct {
	Site    string `json:"site,omitempty"`
	Subtree bool   `json:"subtree,omitempty"`
	All     bool   `json:"all,omitempty"`
	ID      string `json:"id,omitempty"`
	// Wait follows the flushed recipients until each is delivered,
	// deferred again or bounced, or until WaitFor has passed.
	Wait    bool          `json:"wait,omitempty"`
	WaitFor time.Duration `json:"wait_for,omitempty"`
}

// FlushStatus is one line of a flush reply. Without Wait there is one
// line; with Wait, progress lines follow until End (package follow).
type FlushStatus = follow.Status

// Show is a message with its content (postcat -q).
type Show struct {
	Message Message `json:"message"`
	Body    []byte  `json:"body"`
}

// Health is the reply of /v1/health.
type Health struct {
	OK      bool   `json:"ok"`
	PID     int    `json:"pid"`
	UID     int    `json:"uid"`
	Version string `json:"version,omitempty"`
}

// ReloadResult is the reply of POST /v1/reload: the new configuration is
// in force.
type ReloadResult struct {
	// Restart names the changed parameters that take effect only when
	// the daemon restarts (listen addresses, queue_directory, ...).
	Restart []string `json:"restart,omitempty"`
	// FlushIndexRebuild: fast_flush_domains changed and the flush index is
	// being rebuilt in the background.
	FlushIndexRebuild bool `json:"flush_index_rebuild,omitempty"`
}

// Stats is the reply of /v1/stats.
type Stats struct {
	Incoming int64 `json:"incoming"`
	Active   int64 `json:"active"`
	Deferred int64 `json:"deferred"`
	Hold     int64 `json:"hold"`
	Corrupt  int64 `json:"corrupt"`
	Bytes    int64 `json:"bytes"`
}

// SubmitReply is the reply of /v1/submit.
type SubmitReply struct {
	ID string `json:"id"`
}

// Error codes in error replies, for front ends that print Postfix's
// message for each case.
const (
	CodeBadRequest  = "bad_request"
	CodeForbidden   = "forbidden"
	CodeNotFound    = "not_found"
	CodeInvalidSite = "invalid_site"
	CodeNotEligible = "not_eligible"
	CodeTooBig      = "too_big"
	CodeNoSpace     = "no_space"
	CodeInternal    = "internal"
	// CodeReloadFailed: the new configuration did not load; the old one
	// stays in force.
	CodeReloadFailed = "reload_failed"
)

// errorReply is the body of every non-2xx reply.
type errorReply struct {
	Code  string `json:"code"`
	Error string `json:"error"`
}
