package observability

import (
	"context"
	"fmt"
	"io"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

// The span limits come from Config (OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT and the other
// standard names): set, they replace the defaults; -1 lifts one.
func TestSpanLimitsFromConfig(t *testing.T) {
	for _, tc := range []struct {
		name              string
		limits            SpanLimits
		wantLen, wantAttr int
		wantEvents        int
	}{
		{"defaults", SpanLimits{}, DefaultAttributeValueLength, DefaultAttributeCount, DefaultEventCount},
		{"set", SpanLimits{AttributeValueLength: 100, AttributeCount: 3, EventCount: 2}, 100, 3, 2},
		{"no length limit", SpanLimits{AttributeValueLength: -1}, 1 << 20, DefaultAttributeCount, DefaultEventCount},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := tracetest.NewSpanRecorder()
			tel, err := Setup(context.Background(), Process{Service: "test"}, Config{SampleRatio: 1, SpanLimits: tc.limits,
				processors: []sdktrace.SpanProcessor{rec}}, io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = tel.Shutdown(context.Background()) }()
			_, span := tel.Tracer().Start(context.Background(), "GET /", trace.WithSpanKind(trace.SpanKindServer))
			span.SetAttributes(attribute.String("a000", strings.Repeat("x", 1<<20)))
			for i := 1; i < 200; i++ {
				span.SetAttributes(attribute.Int(fmt.Sprintf("a%03d", i), i))
			}
			for range 300 {
				span.AddEvent("e")
			}
			span.End()
			ro := rec.Ended()[0]
			attrs := map[attribute.Key]attribute.Value{}
			for _, kv := range ro.Attributes() {
				attrs[kv.Key] = kv.Value
			}
			if got := len(attrs["a000"].AsString()); got != tc.wantLen {
				t.Errorf("value kept %d bytes, want %d", got, tc.wantLen)
			}
			if len(ro.Attributes()) != tc.wantAttr || len(ro.Events()) != tc.wantEvents {
				t.Errorf("%d attributes, %d events kept; want %d, %d", len(ro.Attributes()), len(ro.Events()), tc.wantAttr, tc.wantEvents)
			}
		})
	}
}
