package control

import (
	"errors"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/holdfast-mta/holdfast/accept"
	"github.com/holdfast-mta/holdfast/store"
)

// Metrics holds holdfast's Prometheus collectors. Every method is safe on a
// nil *Metrics, so packages can take one optionally. The hooks other
// packages call are the methods below; each says who calls it. *Metrics
// satisfies delivery.Events (Outcome, ObserveDelivery), smtpd.Events
// (SessionOpened, SessionClosed, SessionRejected), accept.Events
// (Accepted) and flush.Events (FlushRequest) without those packages
// importing control.
type Metrics struct {
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
	damaged         prometheus.Counter
	deliveryTLS     *prometheus.CounterVec

	mu       sync.Mutex
	watchers map[*watcher]struct{}
}

// StatsFunc reports the queue counters (store.Store.Stats).
type StatsFunc func() (store.Stats, error)

// NewMetrics creates the collectors in a fresh registry, with the Go and
// process collectors. stats, if not nil, is called on every scrape for the
// queue size per state.
func NewMetrics(stats StatsFunc) *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry(), watchers: map[*watcher]struct{}{}}
	m.messages = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "holdfast_messages_total",
		Help: "Messages accepted, and recipient outcomes: sent, deferred, bounced, expired.",
	}, []string{"status"})
	m.flushRequests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "holdfast_flush_requests_total",
		Help: "ETRN, ATRN (ODMR) and operator flush requests by source (etrn, atrn, cli) and result.",
	}, []string{"source", "result"})
	m.flushDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "holdfast_flush_duration_seconds",
		Help:    "Time to carry out a flush request (index seek and commit).",
		Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
	}, []string{"source"})
	m.deliveryDur = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "holdfast_delivery_duration_seconds",
		Help:    "Duration of one delivery attempt (connection and transaction).",
		Buckets: prometheus.ExponentialBuckets(0.01, 2, 14),
	})
	m.sessionsOpen = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "holdfast_smtp_sessions_open", Help: "SMTP sessions currently open.",
	})
	m.sessionsTotal = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "holdfast_smtp_sessions_total", Help: "SMTP sessions opened.",
	})
	m.sessionsReject = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "holdfast_smtp_sessions_rejected_total",
		Help: "SMTP connections refused or ended by policy, by reason.",
	}, []string{"reason"})
	m.authResults = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "holdfast_smtp_auth_total",
		Help: "SMTP AUTH attempts by result: success, failure, temporary, malformed, aborted, rate_limited.",
	}, []string{"result"})
	m.stress = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "holdfast_smtp_stress",
		Help: "1 while the SMTP server is under stress (smtpd_stress_threshold of its slots busy): the ${stress?...} limits are in force.",
	})
	m.rateLimited = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "holdfast_smtp_rate_limited_total",
		Help: "SMTP commands refused by a per-client rate limit, by event: mail, rcpt, newtls, etrn, auth.",
	}, []string{"event"})
	m.commitDuration = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "holdfast_store_commit_duration_seconds",
		Help:    "Duration of the store's group commits (transaction and fsync).",
		Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
	})
	m.commitBatchSize = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "holdfast_store_commit_batch_size",
		Help:    "Writers (enqueues, leases, finishes, flush chunks) per group commit.",
		Buckets: prometheus.ExponentialBuckets(1, 2, 10),
	})
	m.damaged = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "holdfast_queue_damaged_messages_total",
		Help: "Messages that cannot be delivered because a page of queue.db holding their record or body cannot be read (holdfast db salvage).",
	})
	m.deliveryTLS = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "holdfast_delivery_tls_total",
		Help: "Recipient outcomes of SMTP sessions by their TLS: none (plaintext), untrusted, trusted or verified.",
	}, []string{"tls", "status"})
	m.reg.MustRegister(m.deliveryTLS, m.messages, m.damaged, m.flushRequests, m.flushDuration, m.deliveryDur,
		m.sessionsOpen, m.sessionsTotal, m.sessionsReject, m.authResults, m.stress, m.rateLimited, m.commitDuration, m.commitBatchSize,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if stats != nil {
		m.reg.MustRegister(&queueCollector{stats: stats})
	}
	return m
}

// Registry is the registry behind /metrics, for extra collectors.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Damaged counts one message that cannot be delivered because its
// record or body is on a damaged page (serve, from store's OnDamaged).
func (m *Metrics) Damaged() {
	if m != nil {
		m.damaged.Inc()
	}
}

// Accepted counts one message queued (accept.Events: told by package
// accept after the commit, for SMTP and local submission alike).
func (m *Metrics) Accepted(accept.Event) {
	if m != nil {
		m.messages.WithLabelValues("accepted").Inc()
	}
}

// Outcome records the result of one delivery attempt for one recipient;
// status is "sent", "deferred", "bounced" or "expired" (delivery, once
// per recipient after store.Finish returned). `holdfast flush --wait`
// uses these events to tell delivered from bounced mail.
func (m *Metrics) Outcome(id store.ID, addr, status string) {
	if m == nil {
		return
	}
	m.messages.WithLabelValues(status).Inc()
	m.mu.Lock()
	for w := range m.watchers {
		w.notify(id, addr, status)
	}
	m.mu.Unlock()
}

// TLSOutcome counts one recipient outcome of an SMTP session by its TLS
// (delivery.TLSEvents).
func (m *Metrics) TLSOutcome(tls, status string) {
	if m != nil {
		m.deliveryTLS.WithLabelValues(tls, status).Inc()
	}
}

// ObserveDelivery records the duration of one delivery attempt
// (delivery, per connection/transaction).
func (m *Metrics) ObserveDelivery(d time.Duration) {
	if m != nil {
		m.deliveryDur.Observe(d.Seconds())
	}
}

// FlushRequest counts one flush request and its duration. source is
// "etrn" (smtpd) or "cli" (the control server); result is "ok",
// "not_eligible", "invalid", "refused" or "error".
func (m *Metrics) FlushRequest(source, result string, d time.Duration) {
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
func (m *Metrics) SessionOpened() {
	if m != nil {
		m.sessionsOpen.Inc()
		m.sessionsTotal.Inc()
	}
}

// SessionClosed: see SessionOpened.
func (m *Metrics) SessionClosed() {
	if m != nil {
		m.sessionsOpen.Dec()
	}
}

// SessionRejected counts a session refused or ended by policy (smtpd);
// reason is short and bounded, e.g. "too_many_connections", "errors".
func (m *Metrics) SessionRejected(reason string) {
	if m != nil {
		m.sessionsReject.WithLabelValues(reason).Inc()
	}
}

// AuthResult counts one SMTP AUTH attempt (smtpd.AuthEvents).
func (m *Metrics) AuthResult(result string) {
	if m != nil {
		m.authResults.WithLabelValues(result).Inc()
	}
}

// Stress records the SMTP server's stress state (smtpd.LimitEvents).
func (m *Metrics) Stress(on bool) {
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
func (m *Metrics) RateLimited(event string) {
	if m != nil {
		m.rateLimited.WithLabelValues(event).Inc()
	}
}

// ObserveCommit records one group commit of the store and the number of
// writers it carried: the daemon passes it as store.Options.OnCommit.
func (m *Metrics) ObserveCommit(d time.Duration, batch int) {
	if m != nil {
		m.commitDuration.Observe(d.Seconds())
		m.commitBatchSize.Observe(float64(batch))
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

// MetricsHandler serves m in the Prometheus text format.
func MetricsHandler(m *Metrics) http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

// ServeMetrics serves /metrics on l until l is closed. Requests and idle
// keep-alives are bounded in time and the connections in number (at most
// metricsMaxConns: the one idle the longest makes room for a new one).
func ServeMetrics(l net.Listener, m *Metrics) error {
	mux := http.NewServeMux()
	mux.Handle("/metrics", MetricsHandler(m))
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: metricsHeaderTimeout,
		ReadTimeout:       metricsReadTimeout,
		WriteTimeout:      metricsWriteTimeout,
		IdleTimeout:       metricsIdleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ConnState:         newConnCap(metricsMaxConns).state,
	}
	err := srv.Serve(l)
	if errors.Is(err, http.ErrServerClosed) || errors.Is(err, net.ErrClosed) {
		return nil // the caller closed l: a normal shutdown
	}
	return err
}

// watcher receives Outcome events for flush --wait.
type watcher struct {
	ch chan outcomeEvent
}

type outcomeEvent struct {
	id     store.ID
	addr   string
	status string
}

func (w *watcher) notify(id store.ID, addr, status string) {
	select {
	case w.ch <- outcomeEvent{id, addr, status}:
	default: // a slow follower loses events; it still polls the store
	}
}

func (m *Metrics) watch() *watcher {
	if m == nil {
		return nil
	}
	w := &watcher{ch: make(chan outcomeEvent, 1024)}
	m.mu.Lock()
	m.watchers[w] = struct{}{}
	m.mu.Unlock()
	return w
}

func (m *Metrics) unwatch(w *watcher) {
	if m == nil || w == nil {
		return
	}
	m.mu.Lock()
	delete(m.watchers, w)
	m.mu.Unlock()
}
