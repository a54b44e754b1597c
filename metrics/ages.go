package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/holdfast-mta/holdfast/store"
)

// destinationAgeLabels bounds the destination label of
// holdfast_flush_destination_oldest_message_age_seconds: the destinations
// with the oldest mail are exported, the rest are not.
const destinationAgeLabels = 100

// AgesFunc reports the oldest messages (store.Store.Ages).
type AgesFunc func(limit int) (store.Ages, error)

// WatchAges exports the age of the oldest message per state and per ETRN
// destination (postfix_exporter's message age), read at every scrape.
func (m *Set) WatchAges(ages AgesFunc, now func() time.Time) {
	if now == nil {
		now = time.Now
	}
	m.reg.MustRegister(&agesCollector{ages: ages, now: now})
}

var (
	oldestDesc = prometheus.NewDesc("holdfast_queue_oldest_message_age_seconds",
		"Age of the oldest message in each queue state that has messages.", []string{"state"}, nil)
	oldestPartialDesc = prometheus.NewDesc("holdfast_queue_oldest_message_age_partial",
		"1 when the oldest incoming or deferred message was not found within the first 100,000 messages (the ages are lower bounds).", nil, nil)
	destAgeDesc = prometheus.NewDesc("holdfast_flush_destination_oldest_message_age_seconds",
		"Age of the oldest message per ETRN (flush index) destination, for the 100 destinations with the oldest mail.",
		[]string{"destination"}, nil)
)

type agesCollector struct {
	ages AgesFunc
	now  func() time.Time
}

func (c *agesCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- oldestDesc
	ch <- oldestPartialDesc
	ch <- destAgeDesc
}

func (c *agesCollector) Collect(ch chan<- prometheus.Metric) {
	a, err := c.ages(destinationAgeLabels)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(oldestDesc, err)
		return
	}
	now := c.now()
	for st, t := range a.Oldest {
		ch <- prometheus.MustNewConstMetric(oldestDesc, prometheus.GaugeValue, now.Sub(t).Seconds(), st.String())
	}
	partial := 0.0
	if a.OldestPartial {
		partial = 1
	}
	ch <- prometheus.MustNewConstMetric(oldestPartialDesc, prometheus.GaugeValue, partial)
	for _, d := range a.Destinations {
		ch <- prometheus.MustNewConstMetric(destAgeDesc, prometheus.GaugeValue, now.Sub(d.Oldest).Seconds(), d.Destination)
	}
}
