// Package metrics holds holdfast's Prometheus collectors and serves them
// (metrics_listen). The daemon's packages report through a *Set, which
// each of them knows only as the small interface it declares:
//   - smtpd (smtpd.Events, LimitEvents, AuthEvents): SessionOpened and
//     SessionClosed per connection, SessionRejected, Stress, RateLimited
//     and the AUTH results;
//   - accept (accept.Events): Accepted per message committed, from SMTP
//     and local submission alike;
//   - flush (flush.Events, given by flush.Service.SetEvents): each
//     request with its source ("etrn" for smtpd's ETRN, "cli" for the
//     control API's flushes, "invalid" among the results for a site
//     refused for its syntax, "cluster" for those the cluster applies);
//     ODMR (odmr.Events) calls FlushRequest("atrn", ...);
//   - store: Damaged per unreadable message (store.Options.OnDamaged);
//     ObserveCommit per group commit (store.Options.OnCommit): the
//     commit's duration and how many writers it carried;
//     ObserveJournalCommit per write of the queue journal
//     (store.Options.OnJournalCommit);
//   - delivery (delivery.Events, TLSEvents): Outcome per recipient after
//     the store commit, ObserveDelivery per attempt, TLSOutcome.
//
// The queue gauges (size per state, content bytes; the oldest message's
// age per state and per ETRN destination, WatchAges) are read from the
// store at each scrape. Every method is safe on a nil *Set.
package metrics

import (
	"errors"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/holdfast-mta/holdfast/accept"
	"github.com/holdfast-mta/holdfast/internal/listener"
	"github.com/holdfast-mta/holdfast/store"
)

// Set holds holdfast's Prometheus collectors. Every method is safe on a
// nil *Set, so packages can take one optionally. The hooks other
// packages call are the methods below; each says who calls it. *Set
// satisfies delivery.Events (Outcome, ObserveDelivery), smtpd.Events
// (SessionOpened, SessionClosed, SessionRejected), accept.Events
// (Accepted) and flush.Events (FlushRequest) without those packages
// importing metrics.
type Set struct {
	reg *prometheus.Registry

	messages        *prometheus.CounterVec
	flushRequests   *prometheus.CounterVec
	flushDuration   *prometheus.HistogramVec
	deliveryDur     prometheus.Histogram
	sessionsOpen    prometheus.Gauge
	sessionsTotal   prometheus.Counter
	sessionsReject  *prometheus.CounterVec
	authResults     *prometheus.CounterVec
	stress          prometheus.Gauge
	rateLimited     *prometheus.CounterVec
	commitDuration  prometheus.Histogram
	commitBatchSize prometheus.Histogram
	// The journal's writes (store.Options.OnJournalCommit).
	journalDuration, journalRecords prometheus.Histogram
	damaged                         prometheus.Counter
	deliveryTLS                     *prometheus.CounterVec
}

// StatsFunc reports the queue counters (store.Store.Stats).
type StatsFunc func() (store.Stats, error)

// New creates the collectors in a fresh registry, with the Go and
// process collectors. stats, if not nil, is called on every scrape for the
// queue size per state.
func New(stats StatsFunc) *Set {
	m := &Set{reg: prometheus.NewRegistry()}
	m.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m.messages = m.counterVec("holdfast_messages_total",
		"Messages accepted, and recipient outcomes: sent, deferred, bounced, expired.", "status")
	m.flushRequests = m.counterVec("holdfast_flush_requests_total",
		"ETRN, ATRN (ODMR) and operator flush requests by source (etrn, atrn, cli) and result.", "source", "result")
	m.flushDuration = m.histogramVec("holdfast_flush_duration_seconds",
		"Time to carry out a flush request (index seek and commit).",
		prometheus.ExponentialBuckets(0.0005, 2, 14), "source")
	m.deliveryDur = m.histogram("holdfast_delivery_duration_seconds",
		"Duration of one delivery attempt (connection and transaction).",
		prometheus.ExponentialBuckets(0.01, 2, 14))
	m.sessionsOpen = m.gauge("holdfast_smtp_sessions_open", "SMTP sessions currently open.")
	m.sessionsTotal = m.counter("holdfast_smtp_sessions_total", "SMTP sessions opened.")
	m.sessionsReject = m.counterVec("holdfast_smtp_sessions_rejected_total",
		"SMTP connections refused or ended by policy, by reason.", "reason")
	m.authResults = m.counterVec("holdfast_smtp_auth_total",
		"SMTP AUTH attempts by result: success, failure, temporary, malformed, aborted, rate_limited.", "result")
	m.stress = m.gauge("holdfast_smtp_stress",
		"1 while the SMTP server is under stress (smtpd_stress_threshold of its slots busy): the ${stress?...} limits are in force.")
	m.rateLimited = m.counterVec("holdfast_smtp_rate_limited_total",
		"SMTP commands refused by a per-client rate limit, by event: mail, rcpt, newtls, etrn, auth.", "event")
	m.commitDuration = m.histogram("holdfast_store_commit_duration_seconds",
		"Duration of the store's group commits (transaction and fsync).",
		prometheus.ExponentialBuckets(0.0001, 2, 16))
	m.commitBatchSize = m.histogram("holdfast_store_commit_batch_size",
		"Writers (enqueues, leases, finishes, flush chunks) per group commit.",
		prometheus.ExponentialBuckets(1, 2, 10))
	m.journalDuration = m.histogram("holdfast_store_journal_commit_duration_seconds",
		"Duration of the queue journal's writes (a group of new messages, one fdatasync).",
		prometheus.ExponentialBuckets(0.00005, 2, 16))
	m.journalRecords = m.histogram("holdfast_store_journal_commit_records",
		"New messages per write of the queue journal.",
		prometheus.ExponentialBuckets(1, 2, 10))
	m.damaged = m.counter("holdfast_queue_damaged_messages_total",
		"Messages that cannot be delivered because a page of queue.db holding their record or body cannot be read (holdfast db salvage).")
	m.deliveryTLS = m.counterVec("holdfast_delivery_tls_total",
		"Recipient outcomes of SMTP sessions by their TLS: none (plaintext), untrusted, trusted or verified.", "tls", "status")
	if stats != nil {
		m.reg.MustRegister(&queueCollector{stats: stats})
	}
	return m
}

// counter, counterVec, gauge, histogram and histogramVec create one
// collector and register it in m's registry.
func (m *Set) counter(name, help string) prometheus.Counter {
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help})
	m.reg.MustRegister(c)
	return c
}

func (m *Set) counterVec(name, help string, labels ...string) *prometheus.CounterVec {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels)
	m.reg.MustRegister(c)
	return c
}

func (m *Set) gauge(name, help string) prometheus.Gauge {
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: name, Help: help})
	m.reg.MustRegister(g)
	return g
}

func (m *Set) histogram(name, help string, buckets []float64) prometheus.Histogram {
	h := prometheus.NewHistogram(prometheus.HistogramOpts{Name: name, Help: help, Buckets: buckets})
	m.reg.MustRegister(h)
	return h
}

func (m *Set) histogramVec(name, help string, buckets []float64, labels ...string) *prometheus.HistogramVec {
	h := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: name, Help: help, Buckets: buckets}, labels)
	m.reg.MustRegister(h)
	return h
}

// Registry is the registry behind /metrics, for extra collectors.
func (m *Set) Registry() *prometheus.Registry { return m.reg }

// Damaged counts one message that cannot be delivered because its
// record or body is on a damaged page (serve, from store's OnDamaged).
func (m *Set) Damaged() {
	if m != nil {
		m.damaged.Inc()
	}
}

// Accepted counts one message queued (accept.Events: told by package
// accept after the commit, for SMTP and local submission alike).
func (m *Set) Accepted(accept.Event) {
	if m != nil {
		m.messages.WithLabelValues("accepted").Inc()
	}
}

// Outcome records the result of one delivery attempt for one recipient;
// status is "sent", "deferred", "bounced" or "expired" (delivery, once
// per recipient after store.Finish returned).
func (m *Set) Outcome(_ store.ID, _, status string) {
	if m != nil {
		m.messages.WithLabelValues(status).Inc()
	}
}

// TLSOutcome counts one recipient outcome of an SMTP session by its TLS
// (delivery.TLSEvents).
func (m *Set) TLSOutcome(tls, status string) {
	if m != nil {
		m.deliveryTLS.WithLabelValues(tls, status).Inc()
	}
}

// ObserveDelivery records the duration of one delivery attempt
// (delivery, per connection/transaction).
func (m *Set) ObserveDelivery(d time.Duration) {
	if m != nil {
		m.deliveryDur.Observe(d.Seconds())
	}
}

// FlushRequest counts one flush request and its duration. source is
// "etrn" (smtpd) or "cli" (the control server); result is "ok",
// "not_eligible", "invalid", "refused" or "error".
func (m *Set) FlushRequest(source, result string, d time.Duration) {
	if m == nil {
		return
	}
	m.flushRequests.WithLabelValues(source, result).Inc()
	if result == "ok" {
		m.flushDuration.WithLabelValues(source).Observe(d.Seconds())
	}
}

// SessionOpened and SessionClosed track open SMTP sessions (smtpd, per
// accepted connection).
func (m *Set) SessionOpened() {
	if m != nil {
		m.sessionsOpen.Inc()
		m.sessionsTotal.Inc()
	}
}

// SessionClosed: see SessionOpened.
func (m *Set) SessionClosed() {
	if m != nil {
		m.sessionsOpen.Dec()
	}
}

// SessionRejected counts a session refused or ended by policy (smtpd);
// reason is short and bounded, e.g. "too_many_connections", "errors".
func (m *Set) SessionRejected(reason string) {
	if m != nil {
		m.sessionsReject.WithLabelValues(reason).Inc()
	}
}

// AuthResult counts one SMTP AUTH attempt (smtpd.AuthEvents).
func (m *Set) AuthResult(result string) {
	if m != nil {
		m.authResults.WithLabelValues(result).Inc()
	}
}

// Stress records the SMTP server's stress state (smtpd.LimitEvents).
func (m *Set) Stress(on bool) {
	if m != nil {
		v := 0.0
		if on {
			v = 1
		}
		m.stress.Set(v)
	}
}

// RateLimited counts a command refused by a per-client rate limit
// (smtpd.LimitEvents); event is "mail", "rcpt", "newtls", "etrn" or "auth".
func (m *Set) RateLimited(event string) {
	if m != nil {
		m.rateLimited.WithLabelValues(event).Inc()
	}
}

// ObserveCommit records one group commit of the store and the number of
// writers it carried: the daemon passes it as store.Options.OnCommit.
func (m *Set) ObserveCommit(d time.Duration, batch int) {
	if m != nil {
		m.commitDuration.Observe(d.Seconds())
		m.commitBatchSize.Observe(float64(batch))
	}
}

// ObserveJournalCommit records one write of the queue journal and its
// number of records: the daemon passes it as
// store.Options.OnJournalCommit.
func (m *Set) ObserveJournalCommit(d time.Duration, records int) {
	if m != nil {
		m.journalDuration.Observe(d.Seconds())
		m.journalRecords.Observe(float64(records))
	}
}

// queueCollector reads store.Stats at scrape time (O(1) in the store).
type queueCollector struct{ stats StatsFunc }

var (
	queueDesc = prometheus.NewDesc("holdfast_queue_messages",
		"Messages in the queue by state.", []string{"state"}, nil)
	queueBytesDesc = prometheus.NewDesc("holdfast_queue_bytes",
		"Bytes of message content in the queue.", nil, nil)
)

func (c *queueCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- queueDesc
	ch <- queueBytesDesc
}

func (c *queueCollector) Collect(ch chan<- prometheus.Metric) {
	st, err := c.stats()
	if err != nil {
		ch <- prometheus.NewInvalidMetric(queueDesc, err)
		return
	}
	for _, x := range []struct {
		state string
		n     int64
	}{{"incoming", st.Incoming}, {"active", st.Active}, {"deferred", st.Deferred},
		{"hold", st.Hold}, {"corrupt", st.Corrupt}} {
		ch <- prometheus.MustNewConstMetric(queueDesc, prometheus.GaugeValue, float64(x.n), x.state)
	}
	ch <- prometheus.MustNewConstMetric(queueBytesDesc, prometheus.GaugeValue, float64(st.Bytes))
}

// Handler serves m in the Prometheus text format.
func Handler(m *Set) http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

// Bounds of the metrics server: a scrape is a small GET.
const (
	headerTimeout = 10 * time.Second
	readTimeout   = 30 * time.Second
	writeTimeout  = 30 * time.Second
	idleTimeout   = 60 * time.Second
	// maxConns caps the open connections (listener.ConnCap): Prometheus
	// needs one or two.
	maxConns = 64
	// maxHeaderBytes bounds a request header.
	maxHeaderBytes = 64 << 10
)

// Serve serves /metrics on l until l is closed. Requests and idle
// keep-alives are bounded in time and the connections in number (at most
// maxConns: the one idle the longest makes room for a new one).
func Serve(l net.Listener, m *Set) error {
	mux := http.NewServeMux()
	mux.Handle("/metrics", Handler(m))
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: headerTimeout,
		ReadTimeout:       readTimeout,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ConnState:         listener.NewConnCap(maxConns).State,
	}
	err := srv.Serve(l)
	if errors.Is(err, http.ErrServerClosed) || errors.Is(err, net.ErrClosed) {
		return nil // the caller closed l: a normal shutdown
	}
	return err
}
