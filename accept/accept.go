// Package accept is the one path by which new mail enters the queue:
// SMTP (smtpd, after DATA or BDAT LAST) and local submission (sendmail
// through the control API) both take a queue ID and the queue's spool
// (Acceptor.Begin: the in-flight content budget and free space are
// checked before any content is read), write our trace header and the
// content as it arrives (Draft.Write: the store commits it in bounded
// chunks), and commit the message (Draft.Commit: the store record made
// from the Envelope, then one Event to the Events, which the metrics
// count). Where the two differ is in what the caller writes: smtpd
// dot-unstuffs and checks the SMTP content itself; local submission adds
// the From:, Date: and Message-ID: headers a message lacks
// (Draft.WriteLocal), as Postfix's cleanup does for local mail.
//
// The queue is anything with the store's Spool (*store.Store, or the
// scheduler's Admit around it, which defers defer_transports mail on
// arrival and wakes the scheduler).
package accept

import (
	"time"

	"github.com/holdfast-mta/holdfast/store"
)

// Origin says how a message came in (Event.Origin).
type Origin string

// The origins.
const (
	SMTP  Origin = "smtp"  // an SMTP session (smtpd)
	Local Origin = "local" // local submission (sendmail, postdrop)
)

// Queue is where accepted mail is committed (*store.Store satisfies it).
// Spool starts a message's content; its Enqueue returns only after the
// message is durable. Spool fails with store.ErrBusy when the in-flight
// content budget stays used up and store.ErrNoSpace when the disk is.
type Queue interface {
	Spool(id store.ID) (store.Content, error)
}

// Event is one message accepted, told after its commit.
type Event struct {
	ID         store.ID
	Origin     Origin
	Sender     string
	Recipients int
	// Size is the stored content in bytes (our headers included).
	Size int64
}

// Events receives the acceptance events (the metrics:
// holdfast_messages_total{status="accepted"}). Accepted must not block:
// it runs on the session's path, after the commit.
type Events interface {
	Accepted(Event)
}

// Acceptor queues new mail. Safe for concurrent use; each Draft is used
// by one goroutine.
type Acceptor struct {
	q  Queue
	ev Events
}

// New returns an Acceptor that commits to q and tells ev (nil: nobody)
// of every accepted message.
func New(q Queue, ev Events) *Acceptor { return &Acceptor{q: q, ev: ev} }

// Draft is a message being received: its queue ID and its content so
// far, in the queue's spool. It ends with Commit or Abort.
type Draft struct {
	// ID is the message's queue ID, chosen by Begin (the trace header
	// names it before the message is committed).
	ID store.ID
	a  *Acceptor
	sp store.Content
}

// Begin starts a new message: a fresh queue ID and the queue's spool for
// its content. Its errors are the queue's (store.ErrBusy,
// store.ErrNoSpace), known before the client sends any content.
func (a *Acceptor) Begin() (*Draft, error) {
	id := store.NewID()
	sp, err := a.q.Spool(id)
	if err != nil {
		return nil, err
	}
	return &Draft{ID: id, a: a, sp: sp}, nil
}

// Write appends p to the content. A write error (a full disk) is also
// kept by the spool and returned by Commit.
func (d *Draft) Write(p []byte) (int, error) { return d.sp.Write(p) }

// Abort drops the content written so far. It is a no-op after Commit.
func (d *Draft) Abort() { d.sp.Abort() }

// Envelope is what the queue keeps about a message besides its content.
type Envelope struct {
	Origin     Origin
	Sender     string // "" is the null sender <>
	Recipients []store.Recipient
	Arrival    time.Time
	// Hold puts the message on hold (an access table's HOLD).
	Hold bool
	// The client: its address ("" for local submission), name, HELO
	// argument and protocol ("ESMTPS", "LOCAL", ...).
	ClientAddr, ClientName, Helo, Protocol string
	// The DSN and content parameters of MAIL FROM (RFC 3461, 6531, 6152).
	EnvID    string
	Ret      store.Ret
	SMTPUTF8 bool
	Body8Bit bool
	// DelayWarning is delay_warning_time: when the sender is told that
	// the message is still queued (<= 0: never).
	DelayWarning time.Duration
}

// Commit queues the message with the content written: the store record
// made from env (record), committed with the content's last chunk in one
// transaction. Only when it returns nil may the client be told the
// message is queued (250 after DATA). Then the Events are told. The Draft
// is finished either way.
func (d *Draft) Commit(env Envelope) (*store.Message, error) {
	m := record(d.ID, env)
	if err := d.sp.Enqueue(m); err != nil {
		return nil, err
	}
	if d.a.ev != nil {
		d.a.ev.Accepted(Event{ID: m.ID, Origin: env.Origin, Sender: m.Sender, Recipients: len(m.Recipients), Size: m.Size})
	}
	return m, nil
}

// record is the store record of a new message.
func record(id store.ID, env Envelope) *store.Message {
	m := &store.Message{
		ID:         id,
		Sender:     env.Sender,
		Recipients: env.Recipients,
		Arrival:    env.Arrival,
		State:      store.StateIncoming,
		ClientAddr: env.ClientAddr,
		ClientName: env.ClientName,
		Helo:       env.Helo,
		Protocol:   env.Protocol,
		EnvID:      env.EnvID,
		Ret:        env.Ret,
		SMTPUTF8:   env.SMTPUTF8,
		Body8Bit:   env.Body8Bit,
		WarnAt:     WarnAt(env.Sender, env.Arrival, env.DelayWarning),
	}
	if env.Hold {
		m.State = store.StateHold // the message waits in the hold queue
	}
	return m
}

// WarnAt is when the delay warning of a message from sender that arrived
// at arrival is due: arrival + delay (delay_warning_time), or zero (no
// warning) for the null sender or delay <= 0, as Postfix's cleanup
// decides (reference spec §3.8).
func WarnAt(sender string, arrival time.Time, delay time.Duration) time.Time {
	if sender == "" || delay <= 0 {
		return time.Time{}
	}
	return arrival.Add(delay)
}
