package observability

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"
)

// fanout is the OTLP/HTTP client behind a process's one trace exporter. Every span goes
// to Jaeger and to the dashboard; with an exporter per destination each batch was
// converted to protobuf and marshalled twice (a tenth of orders' CPU in the profile).
// Here the SDK converts a batch once, fanout marshals it once and hands the same bytes
// to each destination.
//
// The destinations stay independent: each has its own bounded queue and its own sender,
// so a destination that is down or slow fills (and then drops from) its own queue only,
// and never delays the SDK or the other destination. UploadTraces only enqueues; Flush
// waits until what was enqueued before it has been sent (or given up on).
type fanout struct {
	dests []*destination
}

// destination is one OTLP/HTTP receiver and the queue of request bodies waiting for it.
type destination struct {
	name    string // metric label: jaeger, dashboard
	url     string // …/v1/traces
	client  *http.Client
	queue   chan export
	queued  atomic.Int64 // bytes in queue
	dropped prometheus.Counter
	stop    chan struct{} // closed by Stop: abandon what is left
	done    chan struct{} // closed when the sender has returned
}

// export is one marshalled ExportTraceServiceRequest (shared, read-only, by every
// destination), or a flush marker (flushed set).
type export struct {
	body    []byte
	spans   int
	flushed chan struct{}
}

// Bounds of one destination. A batch of the SDK's (at most 512 spans) is a few hundred
// KiB; the byte budget is what a destination may hold while it is unreachable, per
// process, before it drops.
const (
	exportQueueBatches = 64
	exportQueueBytes   = 4 << 20
	exportTimeout      = 10 * time.Second // one POST
	exportRetryFor     = 5 * time.Second  // retries of one batch, then it is dropped
	exportMaxResponse  = 64 << 10
)

// newFanout returns a client for the given destinations (name → base URL, as in
// OTEL_EXPORTER_OTLP_ENDPOINT: /v1/traces is appended). Its senders run from Start to
// Stop. dropped counts, per destination, spans given up on: queue full, retries spent,
// or refused by the receiver.
func newFanout(endpoints [][2]string, dropped *prometheus.CounterVec) *fanout {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 2
	client := &http.Client{Transport: tr, Timeout: exportTimeout}
	f := &fanout{}
	for _, ep := range endpoints {
		f.dests = append(f.dests, &destination{name: ep[0], url: strings.TrimRight(ep[1], "/") + "/v1/traces",
			client: client, queue: make(chan export, exportQueueBatches), dropped: dropped.WithLabelValues(ep[0]),
			stop: make(chan struct{}), done: make(chan struct{})})
	}
	return f
}

var _ otlptrace.Client = (*fanout)(nil)

// Start starts one sender per destination.
func (f *fanout) Start(context.Context) error {
	for _, d := range f.dests {
		go d.run()
	}
	return nil
}

// Stop sends what is queued (bounded by ctx), then stops the senders; what ctx leaves
// unsent is dropped and counted.
func (f *fanout) Stop(ctx context.Context) error {
	err := f.Flush(ctx)
	for _, d := range f.dests {
		close(d.stop)
	}
	for _, d := range f.dests {
		<-d.done
	}
	return err
}

// UploadTraces marshals the batch once and queues the bytes for every destination. It
// does not wait for any of them; a destination whose queue is full drops the batch
// (counted, and reported to the OpenTelemetry error handler).
func (f *fanout) UploadTraces(_ context.Context, rs []*tracepb.ResourceSpans) error {
	body, err := proto.Marshal(&coltracepb.ExportTraceServiceRequest{ResourceSpans: rs})
	if err != nil {
		return fmt.Errorf("marshal spans: %w", err)
	}
	n := 0
	for _, r := range rs {
		for _, ss := range r.ScopeSpans {
			n += len(ss.Spans)
		}
	}
	for _, d := range f.dests {
		if err := d.enqueue(export{body: body, spans: n}); err != nil {
			// Reported here, not returned: the other destination may well have taken
			// the batch, and the SDK can do nothing about either.
			otel.Handle(err)
		}
	}
	return nil
}

// Flush waits until every destination has sent (or given up on) what was queued before
// the call, bounded by ctx.
func (f *fanout) Flush(ctx context.Context) error {
	var wg sync.WaitGroup
	errs := make([]error, len(f.dests))
	for i, d := range f.dests {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = d.flush(ctx)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// enqueue queues e, or drops it (counted) when the queue is at its bound.
func (d *destination) enqueue(e export) error {
	if d.queued.Add(int64(len(e.body))) > exportQueueBytes {
		d.queued.Add(-int64(len(e.body)))
		d.dropped.Add(float64(e.spans))
		return fmt.Errorf("OTLP export to %s: queue over %d bytes, %d spans dropped", d.name, exportQueueBytes, e.spans)
	}
	select {
	case d.queue <- e:
		return nil
	default:
		d.queued.Add(-int64(len(e.body)))
		d.dropped.Add(float64(e.spans))
		return fmt.Errorf("OTLP export to %s: %d batches queued, %d spans dropped", d.name, exportQueueBatches, e.spans)
	}
}

func (d *destination) flush(ctx context.Context) error {
	marker := export{flushed: make(chan struct{})}
	select {
	case d.queue <- marker:
	case <-d.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("flush spans to %s: %w", d.name, ctx.Err())
	}
	select {
	case <-marker.flushed:
		return nil
	case <-d.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("flush spans to %s: %w", d.name, ctx.Err())
	}
}

// run sends the queue in order, one request at a time, until Stop.
func (d *destination) run() {
	defer close(d.done)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-d.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	for {
		select {
		case <-d.stop:
			d.drain()
			return
		case e := <-d.queue:
			if e.flushed != nil {
				close(e.flushed)
				continue
			}
			if err := d.send(ctx, e.body); err != nil {
				d.dropped.Add(float64(e.spans))
				otel.Handle(fmt.Errorf("OTLP export to %s: %d spans dropped: %w", d.name, e.spans, err))
			}
			d.queued.Add(-int64(len(e.body)))
		}
	}
}

// drain counts what Stop left unsent as dropped.
func (d *destination) drain() {
	for {
		select {
		case e := <-d.queue:
			if e.flushed != nil {
				close(e.flushed)
				continue
			}
			d.dropped.Add(float64(e.spans))
			d.queued.Add(-int64(len(e.body)))
		default:
			return
		}
	}
}

// send POSTs one body, retrying what may succeed later (the receiver unreachable, or
// answering 429, 502, 503, 504) with backoff for up to exportRetryFor.
func (d *destination) send(ctx context.Context, body []byte) error {
	deadline := time.Now().Add(exportRetryFor)
	backoff := 100 * time.Millisecond
	for {
		retry, err := d.post(ctx, body)
		if err == nil || !retry || ctx.Err() != nil || time.Now().Add(backoff).After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(backoff):
		}
		backoff *= 2
	}
}

func (d *destination) post(ctx context.Context, body []byte) (retry bool, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, d.url, bytes.NewReader(body))
	if err != nil {
		return false, err
	}
	req.Header.Set("Content-Type", "application/x-protobuf")
	req.Header.Set("User-Agent", "OTel OTLP Exporter Go/"+otlptrace.Version()+" (microlab)")
	resp, err := d.client.Do(req)
	if err != nil {
		return ctx.Err() == nil, err // unreachable, reset, timed out: may work later
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, exportMaxResponse))
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode <= 299:
		// A receiver that took only part of the request says so in the answer.
		var out coltracepb.ExportTraceServiceResponse
		if len(raw) > 0 && resp.Header.Get("Content-Type") == "application/x-protobuf" && proto.Unmarshal(raw, &out) == nil {
			if ps := out.GetPartialSuccess(); ps != nil && (ps.GetRejectedSpans() > 0 || ps.GetErrorMessage() != "") {
				otel.Handle(fmt.Errorf("OTLP export to %s: %d spans rejected: %s", d.name, ps.GetRejectedSpans(), ps.GetErrorMessage()))
			}
		}
		return false, nil
	case resp.StatusCode == http.StatusTooManyRequests, resp.StatusCode == http.StatusBadGateway,
		resp.StatusCode == http.StatusServiceUnavailable, resp.StatusCode == http.StatusGatewayTimeout:
		return true, fmt.Errorf("%s: %s", d.url, resp.Status)
	}
	return false, fmt.Errorf("%s: %s: %s", d.url, resp.Status, strings.TrimSpace(string(raw)))
}
