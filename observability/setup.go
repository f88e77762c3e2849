package observability

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// Config is the telemetry part of a process's configuration (embedded in app.Base).
type Config struct {
	// OTLPEndpoint is Jaeger's OTLP/HTTP receiver (the OTEL_EXPORTER_OTLP_ENDPOINT
	// convention: a base URL, /v1/traces is appended). Empty: no export to Jaeger.
	OTLPEndpoint string `env:"OTEL_EXPORTER_OTLP_ENDPOINT" default:"http://127.0.0.1:4318"`
	// DashboardEndpoint is the dashboard's OTLP/HTTP receiver, the second destination
	// of the same exporter. Empty: off.
	DashboardEndpoint string `env:"DASHBOARD_OTLP_ENDPOINT"`
	// SampleRatio is the share of new traces recorded (parent-based: a checkout is
	// sampled whole or not at all). 1 records everything; 0 nothing.
	SampleRatio float64 `env:"TRACES_SAMPLER_RATIO" default:"1"`
	// Environment is deployment.environment: native or compose.
	Environment string `env:"DEPLOYMENT_ENVIRONMENT" default:"native"`
	// Span limits (the OpenTelemetry SDK's, under their standard variable names): what
	// one span may carry. Without them an attribute keeps its whole value, and the
	// gateway's server span records the client's whole User-Agent (up to Go's 1 MiB
	// header limit, on any path, before the rate limiter): megabytes a request, for
	// every exporter and for the dashboard. A longer string value is cut to the length
	// limit; attributes, events and links over their counts are dropped (and counted
	// as dropped in the exported span). 0 takes the default; -1 is no limit.
	SpanLimits SpanLimits

	processors []sdktrace.SpanProcessor // tests: record spans in memory
}

// SpanLimits bound each span the SDK records (see Config.SpanLimits).
type SpanLimits struct {
	AttributeValueLength int `env:"OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT" default:"4096"`
	AttributeCount       int `env:"OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT" default:"128"`
	EventCount           int `env:"OTEL_SPAN_EVENT_COUNT_LIMIT" default:"128"`
	LinkCount            int `env:"OTEL_SPAN_LINK_COUNT_LIMIT" default:"128"`
	AttributePerEvent    int `env:"OTEL_EVENT_ATTRIBUTE_COUNT_LIMIT" default:"32"`
	AttributePerLink     int `env:"OTEL_LINK_ATTRIBUTE_COUNT_LIMIT" default:"32"`
}

// Default span limits, for a Config not read from the environment.
const (
	DefaultAttributeValueLength = 4096 // bytes: a User-Agent, a SQL statement, an error message fit
	DefaultAttributeCount       = 128
	DefaultEventCount           = 128
	DefaultLinkCount            = 128
	DefaultAttributePerEvent    = 32
	DefaultAttributePerLink     = 32
)

// sdk is the limits as the SDK takes them: zeros take our defaults (the SDK's default
// length is unlimited, the very thing to avoid), negatives mean no limit. Passed with
// WithRawSpanLimits, so the SDK's own reading of the OTEL_* variables (through
// os.Getenv, not the process's getenv) does not override what Config says.
func (l SpanLimits) sdk() sdktrace.SpanLimits {
	or := func(v, def int) int {
		switch {
		case v == 0:
			return def
		case v < 0:
			return -1
		}
		return v
	}
	return sdktrace.SpanLimits{
		AttributeValueLengthLimit:   or(l.AttributeValueLength, DefaultAttributeValueLength),
		AttributeValueDepthLimit:    sdktrace.DefaultAttributeValueDepthLimit,
		AttributeCountLimit:         or(l.AttributeCount, DefaultAttributeCount),
		EventCountLimit:             or(l.EventCount, DefaultEventCount),
		LinkCountLimit:              or(l.LinkCount, DefaultLinkCount),
		AttributePerEventCountLimit: or(l.AttributePerEvent, DefaultAttributePerEvent),
		AttributePerLinkCountLimit:  or(l.AttributePerLink, DefaultAttributePerLink),
	}
}

// Process names the process the telemetry describes.
type Process struct {
	Service  string // service.name, and the `service` field of every log line
	Version  string
	Instance string // service.instance.id
	LogLevel string // debug, info, warn, error
}

// Telemetry is one process's tracer provider, propagators, logger and metrics.
type Telemetry struct {
	Log      *slog.Logger
	Registry *prometheus.Registry
	Metrics  *Metrics

	rpc        *rpcMetrics // gRPC RED metrics (grpc.go)
	process    Process
	provider   trace.TracerProvider
	sdk        *sdktrace.TracerProvider // nil when tracing is off
	propagator propagation.TextMapPropagator
	tracer     trace.Tracer
	fanout     *fanout // nil when nothing is exported
}

// Setup builds a process's telemetry. Call Shutdown before exit so buffered spans are
// exported. Exporting is asynchronous: an unreachable Jaeger never slows a request, it
// costs a warning in the log (at most one a minute).
func Setup(ctx context.Context, p Process, cfg Config, stdout io.Writer) (*Telemetry, error) {
	if p.Version == "" {
		p.Version = "dev"
	}
	t := &Telemetry{
		Log:        NewLogger(stdout, p.Service, p.Instance, p.LogLevel),
		Registry:   prometheus.NewRegistry(),
		process:    p,
		propagator: propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}),
	}
	t.Registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	t.Metrics = newMetrics(t.Registry)
	t.rpc = newRPCMetrics(t.Registry)
	build := prometheus.NewGauge(prometheus.GaugeOpts{Name: "microlab_build_info", Help: "1; the build running.",
		ConstLabels: prometheus.Labels{"version": p.Version, "goversion": runtime.Version()}})
	build.Set(1)
	t.Registry.MustRegister(build)

	res, err := resource.Merge(resource.Default(), resource.NewWithAttributes(semconv.SchemaURL,
		semconv.ServiceName(p.Service),
		semconv.ServiceVersion(p.Version),
		semconv.ServiceInstanceID(p.Instance),
		semconv.DeploymentEnvironmentNameKey.String(cfg.Environment),
		attribute.String("deployment.environment", cfg.Environment), // the pre-1.27 name, still what many UIs show
	))
	if err != nil {
		return nil, fmt.Errorf("telemetry resource: %w", err)
	}
	opts := []sdktrace.TracerProviderOption{
		sdktrace.WithResource(res),
		sdktrace.WithSampler(Sampler(cfg.SampleRatio)),
		sdktrace.WithRawSpanLimits(cfg.SpanLimits.sdk()),
	}
	// One exporter, one batch processor, whatever the number of destinations: each
	// batch is converted and marshalled once and the same bytes go to Jaeger and to the
	// dashboard, each through a queue of its own (export.go).
	var endpoints [][2]string
	if cfg.OTLPEndpoint != "" {
		endpoints = append(endpoints, [2]string{"jaeger", cfg.OTLPEndpoint})
	}
	if cfg.DashboardEndpoint != "" {
		endpoints = append(endpoints, [2]string{"dashboard", cfg.DashboardEndpoint})
	}
	if len(endpoints) > 0 {
		dropped := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "telemetry_export_dropped_spans_total",
			Help: "Spans not delivered to a trace destination (jaeger, dashboard): its queue full, its retries spent, or refused."},
			[]string{"destination"})
		t.Registry.MustRegister(dropped)
		t.fanout = newFanout(endpoints, dropped)
		exp, err := otlptrace.New(ctx, t.fanout)
		if err != nil {
			return nil, fmt.Errorf("OTLP exporter: %w", err)
		}
		opts = append(opts, sdktrace.WithBatcher(exp, sdktrace.WithBatchTimeout(time.Second)))
	}
	for _, sp := range cfg.processors {
		opts = append(opts, sdktrace.WithSpanProcessor(sp))
	}
	t.sdk = sdktrace.NewTracerProvider(opts...)
	t.provider = t.sdk
	t.tracer = t.provider.Tracer("microlab/" + p.Service)
	// The OpenTelemetry SDK reports export failures through a global handler; route them
	// to our log, once a minute at most, so a stopped Jaeger doesn't flood the output.
	otel.SetErrorHandler(&throttledErrors{log: t.Log, every: time.Minute})
	return t, nil
}

// Nop is telemetry that records nothing (a fresh, unexported registry; no-op tracer),
// for tests and tools.
func Nop(log *slog.Logger) *Telemetry {
	reg := prometheus.NewRegistry()
	return &Telemetry{Log: log, Registry: reg, Metrics: newMetrics(reg), rpc: newRPCMetrics(reg),
		provider: noop.NewTracerProvider(), tracer: noop.NewTracerProvider().Tracer(""),
		propagator: propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})}
}

// Shutdown exports the spans still buffered (bounded by ctx).
func (t *Telemetry) Shutdown(ctx context.Context) error {
	if t == nil || t.sdk == nil {
		return nil
	}
	return t.sdk.Shutdown(ctx)
}

// Flush exports every span ended so far (bounded by ctx) and leaves the provider
// running. Export is otherwise batched, once a second: a process about to exit at once
// (the lab's crash_after_commit fault) flushes first, or its last spans are lost.
func (t *Telemetry) Flush(ctx context.Context) error {
	if t == nil || t.sdk == nil {
		return nil
	}
	if err := t.sdk.ForceFlush(ctx); err != nil {
		return err
	}
	if t.fanout == nil {
		return nil
	}
	// The exporter only queued the spans; wait until each destination has them.
	return t.fanout.Flush(ctx)
}

// TracerProvider is the process's provider (for libraries such as otelpgx).
func (t *Telemetry) TracerProvider() trace.TracerProvider {
	if t == nil {
		return noop.NewTracerProvider()
	}
	return t.provider
}

// Propagator is the W3C trace-context + baggage propagator.
func (t *Telemetry) Propagator() propagation.TextMapPropagator {
	if t == nil {
		return propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})
	}
	return t.propagator
}

// Tracer is the process's tracer.
func (t *Telemetry) Tracer() trace.Tracer {
	if t == nil {
		return noop.NewTracerProvider().Tracer("")
	}
	return t.tracer
}

// Service is the service name the telemetry was set up for.
func (t *Telemetry) Service() string {
	if t == nil {
		return ""
	}
	return t.process.Service
}

// Sampler samples ratio of new traces and follows the parent's decision otherwise. Root
// spans that are neither a request nor a message (a background poller's query, say)
// are dropped: a trace every second from the outbox relay would bury the checkouts.
func Sampler(ratio float64) sdktrace.Sampler {
	return sdktrace.ParentBased(rootSampler{sdktrace.TraceIDRatioBased(ratio)})
}

type rootSampler struct{ ratio sdktrace.Sampler }

func (s rootSampler) ShouldSample(p sdktrace.SamplingParameters) sdktrace.SamplingResult {
	switch p.Kind {
	case trace.SpanKindServer, trace.SpanKindConsumer, trace.SpanKindProducer:
		return s.ratio.ShouldSample(p)
	}
	return sdktrace.SamplingResult{Decision: sdktrace.Drop,
		Tracestate: trace.SpanContextFromContext(p.ParentContext).TraceState()}
}

func (s rootSampler) Description() string { return "microlab root: " + s.ratio.Description() }

type throttledErrors struct {
	log   *slog.Logger
	every time.Duration
	mu    sync.Mutex
	last  time.Time
	n     int
}

func (h *throttledErrors) Handle(err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.n++
	if time.Since(h.last) < h.every {
		return
	}
	h.last = time.Now()
	h.log.Warn("telemetry export failing (is Jaeger running? `go run ./lab doctor`)", "err", err, "errors_since_last_report", h.n)
	h.n = 0
}
