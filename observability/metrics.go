package observability

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the process's Prometheus metrics (docs/observability.md is the list,
// with each one's meaning). Labels never carry ids: a label value per order would be a
// time series per order.
type Metrics struct {
	HTTPRequests        *prometheus.CounterVec   // route, method, code
	HTTPDuration        *prometheus.HistogramVec // route, method
	HTTPInFlight        prometheus.Gauge
	Published           *prometheus.CounterVec // exchange, message_type, outcome
	Returned            *prometheus.CounterVec // exchange, message_type
	ConnectionBlocked   *prometheus.GaugeVec   // connection (publish, consume)
	Handled             *prometheus.CounterVec // queue, message_type, outcome
	HandleDuration      *prometheus.HistogramVec
	HandlerInFlight     *prometheus.GaugeVec   // queue
	Retries             *prometheus.CounterVec // queue, message_type
	DeadLettered        *prometheus.CounterVec // queue, message_type
	InboxDuplicates     *prometheus.CounterVec // queue, message_type
	OutboxPublishLag    prometheus.Histogram
	SagaStarted         *prometheus.CounterVec   // mode
	SagaCompleted       *prometheus.CounterVec   // mode, outcome
	SagaCompensated     *prometheus.CounterVec   // mode, reason
	SagaDuration        *prometheus.HistogramVec // mode, outcome
	CircuitBreakerState *prometheus.GaugeVec     // upstream
}

// Bucket boundaries. HTTP and handlers are mostly milliseconds; a saga is a chain of
// hops and, under faults, timeouts of seconds.
var (
	latencyBuckets = []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}
	sagaBuckets    = []float64{.05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}
)

func newMetrics(reg prometheus.Registerer) *Metrics {
	f := func(c prometheus.Collector) { reg.MustRegister(c) }
	counter := func(name, help string, labels ...string) *prometheus.CounterVec {
		c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels)
		f(c)
		return c
	}
	m := &Metrics{
		HTTPRequests: counter("http_server_requests_total", "HTTP requests served.", "route", "method", "code"),
		HTTPDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "http_server_request_duration_seconds",
			Help: "Time to serve an HTTP request.", Buckets: latencyBuckets}, []string{"route", "method"}),
		HTTPInFlight: prometheus.NewGauge(prometheus.GaugeOpts{Name: "http_server_requests_in_flight",
			Help: "HTTP requests being served now."}),
		Published: counter("messaging_published_total", "Messages published; outcome ok (confirmed) or error (failed or nacked).",
			"exchange", "message_type", "outcome"),
		Returned: counter("messaging_returned_total", "Messages the broker returned as unroutable.", "exchange", "message_type"),
		ConnectionBlocked: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "amqp_connection_blocked",
			Help: "1 while RabbitMQ blocks the connection (a memory or disk alarm), else 0; connection is publish or consume."},
			[]string{"connection"}),
		Handled: counter("messaging_handled_total", "Messages handled; outcome ok or error.", "queue", "message_type", "outcome"),
		HandleDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "messaging_handle_duration_seconds",
			Help: "Time a message handler took.", Buckets: latencyBuckets}, []string{"queue", "message_type"}),
		HandlerInFlight: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "messaging_in_flight",
			Help: "Messages being handled now."}, []string{"queue"}),
		Retries:         counter("messaging_retries_total", "Failed messages moved to a retry queue.", "queue", "message_type"),
		DeadLettered:    counter("messaging_dead_lettered_total", "Failed messages moved to the DLQ.", "queue", "message_type"),
		InboxDuplicates: counter("inbox_duplicates_total", "Redelivered messages the inbox recognised and skipped.", "queue", "message_type"),
		OutboxPublishLag: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "outbox_publish_lag_seconds",
			Help: "From the commit that wrote an outbox row to the broker's confirm of its publish.", Buckets: latencyBuckets}),
		SagaStarted:     counter("saga_started_total", "Checkout sagas started.", "mode"),
		SagaCompleted:   counter("saga_completed_total", "Checkout sagas ended; outcome confirmed or cancelled.", "mode", "outcome"),
		SagaCompensated: counter("saga_compensated_total", "Sagas that had to undo completed steps, by reason.", "mode", "reason"),
		SagaDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "saga_duration_seconds",
			Help: "From order placed to confirmed or cancelled.", Buckets: sagaBuckets}, []string{"mode", "outcome"}),
		CircuitBreakerState: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "circuit_breaker_state",
			Help: "Circuit breaker state: 0 closed, 1 half-open, 2 open."}, []string{"upstream"}),
	}
	f(m.HTTPDuration)
	f(m.ConnectionBlocked)
	f(m.HTTPInFlight)
	f(m.HandleDuration)
	f(m.HandlerInFlight)
	f(m.OutboxPublishLag)
	f(m.SagaDuration)
	f(m.CircuitBreakerState)
	return m
}

// InitQueue creates the zero-valued series of a queue for every message type it
// handles, so that rate() and increase() answer 0 (not "no data") in a healthy lab —
// an alert or a panel over a counter that never moved still works.
func (m *Metrics) InitQueue(queue string, types []string) {
	m.HandlerInFlight.WithLabelValues(queue)
	for _, t := range types {
		m.Handled.WithLabelValues(queue, t, "ok")
		m.Handled.WithLabelValues(queue, t, "error")
		m.HandleDuration.WithLabelValues(queue, t)
		m.Retries.WithLabelValues(queue, t)
		m.DeadLettered.WithLabelValues(queue, t)
		m.InboxDuplicates.WithLabelValues(queue, t)
	}
}

// InitSaga creates the zero-valued saga series for each mode, outcome and reason.
func (m *Metrics) InitSaga(modes, outcomes, reasons []string) {
	for _, mode := range modes {
		m.SagaStarted.WithLabelValues(mode)
		for _, o := range outcomes {
			m.SagaCompleted.WithLabelValues(mode, o)
			m.SagaDuration.WithLabelValues(mode, o)
		}
		for _, r := range reasons {
			m.SagaCompensated.WithLabelValues(mode, r)
		}
	}
}

// GaugeFunc registers a collector that reads several gauges with one call at scrape
// time (e.g. the outbox backlog: one query for both count and age). read gets a context
// bounded by timeout; if it fails the gauges are simply absent from that scrape.
func (t *Telemetry) GaugeFunc(timeout time.Duration, read func(ctx context.Context) (map[string]float64, error), gauges map[string]string) {
	if t == nil {
		return
	}
	t.Registry.MustRegister(&gaugeFunc{timeout: timeout, read: read, descs: descs(gauges), log: t})
}

func descs(gauges map[string]string) map[string]*prometheus.Desc {
	out := map[string]*prometheus.Desc{}
	for name, help := range gauges {
		out[name] = prometheus.NewDesc(name, help, nil, nil)
	}
	return out
}

type gaugeFunc struct {
	timeout time.Duration
	read    func(ctx context.Context) (map[string]float64, error)
	descs   map[string]*prometheus.Desc
	log     *Telemetry
}

func (g *gaugeFunc) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range g.descs {
		ch <- d
	}
}

func (g *gaugeFunc) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), g.timeout)
	defer cancel()
	vals, err := g.read(ctx)
	if err != nil {
		g.log.Log.Warn("metrics: reading gauges failed", "err", err)
		return
	}
	for name, d := range g.descs {
		if v, ok := vals[name]; ok {
			ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v)
		}
	}
}

// Info registers an info-style metric: name{labels...} 1 for each label set read returns at
// scrape time (e.g. lab_setting_info{key,value}).
func (t *Telemetry) Info(name, help string, labels []string, read func() [][]string) {
	if t == nil {
		return
	}
	t.Registry.MustRegister(&infoCollector{desc: prometheus.NewDesc(name, help, labels, nil), read: read})
}

type infoCollector struct {
	desc *prometheus.Desc
	read func() [][]string
}

func (c *infoCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *infoCollector) Collect(ch chan<- prometheus.Metric) {
	for _, vals := range c.read() {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, 1, vals...)
	}
}
