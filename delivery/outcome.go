package delivery

import (
	"time"

	"github.com/rs/zerolog"

	"github.com/holdfast-mta/holdfast/store"
)

// logOutcome writes the log line of one recipient outcome, the one place
// it is built: the structured event (to, relay, delay, dsn, status, reply,
// next_attempt for a deferral, the TLS of the session) that package
// maillog renders as Postfix's "QUEUEID: to=<...>, relay=..., delay=...,
// dsn=..., status=... (...)" line. An attempt's outcomes
// (Scheduler.logResult) and the deferrals on arrival of defer_transports
// (admitter.admit) both go through it. log carries the queue_id.
func logOutcome(log *zerolog.Logger, m *store.Message, i int, res result, now, next time.Time) {
	relay := res.Relay
	if relay == "" {
		relay = "none"
	}
	ev := log.Info()
	if res.State == store.RcptPending {
		ev = ev.Time("next_attempt", next)
	}
	if res.TLS != nil && res.TLS.Protocol == "" {
		ev = ev.Str("tls", "none")
	} else if res.TLS != nil {
		ev = ev.Str("tls", res.TLS.Protocol).Str("tls_cipher", res.TLS.Cipher).Str("tls_trust", res.TLS.Trust)
	}
	ev.Str("to", m.Recipients[i].Addr).Str("relay", relay).
		Float64("delay", now.Sub(m.Arrival).Seconds()).
		Str("dsn", res.DSN).Str("status", res.Status).Str("reply", res.Reply).Msg("")
}
