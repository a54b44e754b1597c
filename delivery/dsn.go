package delivery

import (
	"time"

	"github.com/holdfast-mta/holdfast/dsn"
	"github.com/holdfast-mta/holdfast/store"
)

// The notices themselves are built by package dsn; delivery decides who
// gets one (NOTIFY, the null sender), reads what it returns of the
// original, and queues it in the attempt's Finish.

// bounce builds the RFC 3464 notice for recipients idx of the attempt, to
// be queued in the attempt's Finish transaction. It returns nil when no
// notice is owed: no recipient asked for one (NOTIFY), or the message has
// the null sender, whose failures are logged and dropped (RFC 5321 sec
// 4.5.5: never bounce a bounce).
func (d *Scheduler) bounce(a *attempt, idx []int, kind dsn.Kind) *store.NewMessage {
	var rcpts []int
	for _, i := range idx {
		if dsn.Wants(a.m.Recipients[i].Notify, kind) {
			rcpts = append(rcpts, i)
		}
	}
	if len(rcpts) == 0 {
		return nil
	}
	if a.m.Sender == "" {
		if kind == dsn.Failed {
			a.log.Info().Int("nrcpt", len(rcpts)).Str("status", "bounced").
				Msg("undeliverable mail from the null sender discarded, no notice sent")
		}
		return nil
	}
	d.readForNotice(a, kind)
	body := d.buildDSN(a, rcpts, kind)
	msg := &store.Message{
		ID:       store.NewID(),
		Sender:   "",
		Protocol: "LOCAL",
		Recipients: []store.Recipient{{
			Addr: a.m.Sender,
		}},
		SMTPUTF8: a.m.SMTPUTF8,
	}
	a.log.Info().Str("notice_id", string(msg.ID)).Str("to", a.m.Sender).
		Str("event", kind.Event()).
		Msg("sender notification queued")
	return &store.NewMessage{Msg: msg, Body: body}
}

// readForNotice reads what a notice returns of the original: its header
// section, and the whole content when it is within bounce_size_limit.
func (d *Scheduler) readForNotice(a *attempt, kind dsn.Kind) {
	if err := d.loadHead(a); err != nil {
		a.log.Error().Err(err).Msg("read body for the notice failed")
	}
	m := a.m
	if a.whole != nil || m.Ret == store.RetHdrs || kind != dsn.Failed || m.Size > d.o.BounceSizeLimit {
		return
	}
	body, err := d.s.Body(m.ID)
	if err != nil {
		a.log.Error().Err(err).Msg("read body for the notice failed")
		return
	}
	a.whole = body
}

// buildDSN builds the notice about recipients rcpts of the attempt.
func (d *Scheduler) buildDSN(a *attempt, rcpts []int, kind dsn.Kind) []byte {
	n := dsn.Notice{
		Kind: kind, Msg: a.m, Head: a.head, Whole: a.whole,
		Hostname: d.o.Hostname, Now: d.o.Clock.Now(),
		DelayWarning: d.o.DelayWarning, Lifetime: d.lifetime(a.m),
	}
	for _, i := range rcpts {
		res := a.results[i]
		n.Results = append(n.Results, dsn.Result{Rcpt: i, Reply: res.Reply, DSN: res.DSN,
			Diag: res.Diag, Remote: res.Remote, Relay: res.Relay})
	}
	return dsn.Build(n)
}

// lifetime is the message's queue lifetime (dsn.Lifetime).
func (d *Scheduler) lifetime(m *store.Message) time.Duration {
	return dsn.Lifetime(m, d.o.MaxQueueLifetime, d.o.BounceQueueLifetime)
}

// headerPart is the header section of a message (dsn.HeaderPart).
func headerPart(body []byte) []byte { return dsn.HeaderPart(body) }
