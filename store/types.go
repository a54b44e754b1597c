package store

import (
	"time"

	"github.com/holdfast-mta/holdfast/internal/addr"
)

// State is where a message is in its life. See DESIGN.md "Data model".
type State uint8

// Message states. The numeric values are part of the on-disk encoding.
const (
	// StateIncoming: accepted (or flushed, released, requeued) and due now.
	StateIncoming State = 1
	// StateActive: leased by a delivery worker. A lease left behind by a
	// crash is returned to StateIncoming when the store opens.
	StateActive State = 2
	// StateDeferred: at least one recipient failed temporarily; due later.
	StateDeferred State = 3
	// StateHold: on hold (postsuper -h); never attempted, never expires.
	StateHold State = 4
)

// String returns Postfix's queue name for the state.
func (s State) String() string {
	switch s {
	case StateIncoming:
		return "incoming"
	case StateActive:
		return "active"
	case StateDeferred:
		return "deferred"
	case StateHold:
		return "hold"
	}
	return "unknown"
}

// ParseState reads a queue name as printed by String.
func ParseState(name string) (State, bool) {
	for _, s := range []State{StateIncoming, StateActive, StateDeferred, StateHold} {
		if s.String() == name {
			return s, true
		}
	}
	return 0, false
}

// RcptState is the state of one recipient of a message.
type RcptState uint8

// Recipient states. The numeric values are part of the on-disk encoding.
const (
	// RcptPending: still to be delivered (new or deferred).
	RcptPending RcptState = 0
	// RcptDelivered: accepted by the next hop (2xx) or discarded on purpose.
	RcptDelivered RcptState = 1
	// RcptBounced: failed permanently (5xx, error transport) or expired;
	// the sender has been (or will not be) notified.
	RcptBounced RcptState = 2
)

// Notify holds the RFC 3461 NOTIFY= flags of a recipient.
type Notify uint8

// NOTIFY flags (RFC 3461 sec 4.1). Zero means "not given": the MTA's
// default, which is FAILURE (and DELAY at the MTA's discretion).
const (
	NotifyNever   Notify = 1 << 0
	NotifySuccess Notify = 1 << 1
	NotifyFailure Notify = 1 << 2
	NotifyDelay   Notify = 1 << 3
)

// Ret is the RFC 3461 RET= parameter of MAIL FROM.
type Ret uint8

// RET values.
const (
	RetDefault Ret = 0
	RetFull    Ret = 1
	RetHdrs    Ret = 2
)

// Recipient is one envelope recipient with its own delivery state.
// Per-recipient state lets a flush expedite one destination's recipients
// without retrying the others (reference spec §6.6).
type Recipient struct {
	// Addr is the address as accepted, local part case preserved, domain
	// lower-cased.
	Addr string
	// Orig is the RFC 3461 ORCPT value ("rfc822;user@example"), or "".
	Orig string
	// Notify is the RFC 3461 NOTIFY= set.
	Notify Notify
	// State is pending, delivered or bounced.
	State RcptState
	// Attempts counts failed delivery attempts of this recipient; it
	// drives the exponential backoff.
	Attempts int
	// NextAttempt is when this recipient is next due (zero: due now).
	NextAttempt time.Time
	// Forced is the one-shot mark set by a flush (ETRN, flush DOMAIN,
	// flush --all): the next attempt ignores the dead-destination list
	// and defer_transports. Cleared by the attempt that consumes it.
	Forced bool
	// FlushPending is set when a flush arrives while the message is
	// active: when the current attempt ends the recipient, if still
	// pending, is made due at once and Forced (Postfix drops such
	// requests, reference spec §6.9).
	FlushPending bool
	// Reply is the last reply or reason for this recipient ("deferred
	// transport", "connect to ...: Connection refused", the remote 5xx).
	// mailq shows it in parentheses.
	Reply string
	// DSN is the enhanced status code of the last outcome (e.g. "4.4.1").
	DSN string
	// RemoteMTA is the host that gave the last reply, if any.
	RemoteMTA string
}

// Domain returns the recipient's destination: the domain after the
// right-most '@' in its destination form (addr.DomainOf: lower case, no
// trailing dot, A-labels), or "" when there is none.
func (r *Recipient) Domain() string { return addr.DomainOf(r.Addr) }

// Message is the envelope of one queued message: Postfix's queue file
// minus the content, which is stored separately (bucket "body").
type Message struct {
	// ID is the queue ID.
	ID ID
	// Sender is the envelope sender; "" is the null sender <>.
	Sender string
	// Recipients, in the order they were given.
	Recipients []Recipient
	// Arrival is when the message was accepted.
	Arrival time.Time
	// Size is the size of the stored content in bytes.
	Size int64
	// State is the message's queue.
	State State
	// Due is when the message is next due (its key in bucket "due"); zero
	// when active or on hold.
	Due time.Time
	// HeldFrom is the state the message had when it was put on hold.
	HeldFrom State
	// ClientAddr is the SMTP client's IP address ("" for local submission).
	ClientAddr string
	// ClientName is the client's host name, or "unknown".
	ClientName string
	// Helo is the HELO/EHLO argument the client gave.
	Helo string
	// Protocol is "SMTP", "ESMTP", "ESMTPS", "ESMTPA", "LOCAL", ...
	Protocol string
	// EnvID is the RFC 3461 ENVID= value, or "".
	EnvID string
	// Ret is the RFC 3461 RET= value.
	Ret Ret
	// SMTPUTF8 is set when MAIL FROM carried SMTPUTF8 (RFC 6531).
	SMTPUTF8 bool
	// Body8Bit is set for BODY=8BITMIME.
	Body8Bit bool
	// WarnAt is when the one delay warning is due (zero: none, or already
	// sent).
	WarnAt time.Time
	// Expired is set by an operator's force-expire: the next attempt
	// returns the message to the sender.
	Expired bool
}

// Pending reports whether any recipient is still to be delivered.
func (m *Message) Pending() bool {
	for i := range m.Recipients {
		if m.Recipients[i].State == RcptPending {
			return true
		}
	}
	return false
}
