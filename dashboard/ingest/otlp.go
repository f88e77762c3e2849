package ingest

import (
	"bytes"
	"compress/gzip"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// MaxOTLPBody bounds an export request, both as sent and once decompressed (a small
// gzip body can inflate to gigabytes). Beyond it the receiver answers 413.
const MaxOTLPBody = 8 << 20

const (
	ctProtobuf = "application/x-protobuf"
	ctJSON     = "application/json"
)

// OTLPHandler is the OTLP/HTTP trace receiver, to be mounted at POST /v1/traces. It
// takes ExportTraceServiceRequest bodies in binary protobuf (application/x-protobuf) or
// OTLP/JSON (application/json, trace and span ids as hex strings), optionally gzipped,
// hands the flattened spans to sink (once per request, never with an empty slice) and
// answers with an ExportTraceServiceResponse in the request's encoding.
//
// Errors: 405 for a method other than POST, 415 for another content type or encoding,
// 413 for a body over MaxOTLPBody, 400 (with the reason in a text/plain body) for a body
// that does not decode. Per the OTLP spec none of these is worth retrying, and the
// exporters do not.
func OTLPHandler(sink func([]Span), log *slog.Logger) http.Handler {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", http.MethodPost)
			http.Error(w, "method not allowed: OTLP export is POST", http.StatusMethodNotAllowed)
			return
		}
		ct, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
		if err != nil || (ct != ctProtobuf && ct != ctJSON) {
			http.Error(w, fmt.Sprintf("unsupported content type %q: send %s or %s",
				r.Header.Get("Content-Type"), ctProtobuf, ctJSON), http.StatusUnsupportedMediaType)
			return
		}
		body, status, err := readOTLPBody(w, r)
		if err != nil {
			log.Warn("otlp: rejected export", "status", status, "err", err, "remote", r.RemoteAddr)
			http.Error(w, err.Error(), status)
			return
		}
		req := &coltracepb.ExportTraceServiceRequest{}
		if ct == ctJSON {
			err = unmarshalOTLPJSON(body, req)
		} else {
			err = proto.Unmarshal(body, req)
		}
		if err != nil {
			log.Warn("otlp: malformed export", "content_type", ct, "err", err, "remote", r.RemoteAddr)
			http.Error(w, "malformed "+ct+" ExportTraceServiceRequest: "+err.Error(), http.StatusBadRequest)
			return
		}
		if spans := ConvertSpans(req); len(spans) > 0 && sink != nil {
			sink(spans)
		}
		var out []byte
		if ct == ctJSON {
			out, err = protojson.Marshal(&coltracepb.ExportTraceServiceResponse{})
		} else {
			out, err = proto.Marshal(&coltracepb.ExportTraceServiceResponse{})
		}
		if err != nil { // cannot happen for an empty message
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", ct)
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(out)
	})
}

// readOTLPBody reads the (possibly gzipped) body, bounded by MaxOTLPBody before and
// after decompression. It returns the HTTP status to answer with on error.
func readOTLPBody(w http.ResponseWriter, r *http.Request) ([]byte, int, error) {
	var src io.Reader = http.MaxBytesReader(w, r.Body, MaxOTLPBody)
	switch enc := strings.ToLower(strings.TrimSpace(r.Header.Get("Content-Encoding"))); enc {
	case "", "identity":
	case "gzip":
		zr, err := gzip.NewReader(src)
		if err != nil {
			if errors.As(err, new(*http.MaxBytesError)) {
				return nil, http.StatusRequestEntityTooLarge, tooLarge()
			}
			return nil, http.StatusBadRequest, fmt.Errorf("malformed gzip body: %w", err)
		}
		defer zr.Close()
		src = zr
	default:
		return nil, http.StatusUnsupportedMediaType, fmt.Errorf("unsupported content encoding %q: send gzip or none", enc)
	}
	// One byte more than allowed tells "exactly at the limit" from "beyond it".
	body, err := io.ReadAll(io.LimitReader(src, MaxOTLPBody+1))
	if err != nil {
		if errors.As(err, new(*http.MaxBytesError)) {
			return nil, http.StatusRequestEntityTooLarge, tooLarge()
		}
		return nil, http.StatusBadRequest, fmt.Errorf("read body: %w", err)
	}
	if len(body) > MaxOTLPBody {
		return nil, http.StatusRequestEntityTooLarge, tooLarge()
	}
	return body, 0, nil
}

func tooLarge() error {
	return fmt.Errorf("export request larger than %d bytes: send smaller batches", MaxOTLPBody)
}

// unmarshalOTLPJSON decodes OTLP/JSON. It is proto3 JSON with one exception the OTLP
// spec makes: traceId, spanId and parentSpanId (in spans and span links) are hex strings,
// where protojson expects base64 for bytes fields. So those fields are rewritten to
// base64 first. Unknown fields are ignored, as the spec requires of receivers.
func unmarshalOTLPJSON(body []byte, req *coltracepb.ExportTraceServiceRequest) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber() // keep 64-bit nanosecond timestamps exact
	var root any
	if err := dec.Decode(&root); err != nil {
		return fmt.Errorf("invalid JSON: %w", err)
	}
	if dec.More() {
		return errors.New("invalid JSON: data after the top-level object")
	}
	obj, ok := root.(map[string]any)
	if !ok {
		return errors.New("top level must be a JSON object")
	}
	for _, rs := range field(obj, "resourceSpans", "resource_spans") {
		rsObj, _ := rs.(map[string]any)
		for _, ss := range field(rsObj, "scopeSpans", "scope_spans") {
			ssObj, _ := ss.(map[string]any)
			for _, sp := range field(ssObj, "spans") {
				spObj, _ := sp.(map[string]any)
				if err := hexIDsToBase64(spObj); err != nil {
					return err
				}
				for _, l := range field(spObj, "links") {
					lObj, _ := l.(map[string]any)
					if err := hexIDsToBase64(lObj); err != nil {
						return err
					}
				}
			}
		}
	}
	fixed, err := json.Marshal(root)
	if err != nil {
		return err
	}
	return protojson.UnmarshalOptions{DiscardUnknown: true}.Unmarshal(fixed, req)
}

// field returns obj's array under the first of names present (JSON or proto name).
func field(obj map[string]any, names ...string) []any {
	for _, n := range names {
		if v, ok := obj[n]; ok {
			a, _ := v.([]any)
			return a
		}
	}
	return nil
}

func hexIDsToBase64(obj map[string]any) error {
	for _, k := range []string{"traceId", "trace_id", "spanId", "span_id", "parentSpanId", "parent_span_id"} {
		s, ok := obj[k].(string)
		if !ok || s == "" {
			continue
		}
		b, err := hex.DecodeString(s)
		if err != nil {
			return fmt.Errorf("%s %q is not hex (OTLP/JSON ids are hex strings)", k, s)
		}
		obj[k] = base64.StdEncoding.EncodeToString(b)
	}
	return nil
}

// ConvertSpans flattens an export request into Spans: the service from the resource's
// service.name, the kind lower-cased (unspecified counts as internal, per the spec),
// Error when the status code is ERROR (Status is then the status message), attributes
// flattened to strings (arrays and maps as JSON).
func ConvertSpans(req *coltracepb.ExportTraceServiceRequest) []Span {
	var out []Span
	for _, rs := range req.GetResourceSpans() {
		service := "unknown"
		for _, kv := range rs.GetResource().GetAttributes() {
			if kv.GetKey() == "service.name" {
				if s := flatten(kv.GetValue()); s != "" {
					service = s
				}
			}
		}
		for _, ss := range rs.GetScopeSpans() {
			for _, sp := range ss.GetSpans() {
				out = append(out, convertSpan(service, sp))
			}
		}
	}
	return out
}

func convertSpan(service string, sp *tracepb.Span) Span {
	start := nanos(sp.GetStartTimeUnixNano())
	var d time.Duration
	if end := sp.GetEndTimeUnixNano(); end > sp.GetStartTimeUnixNano() {
		d = time.Duration(end - sp.GetStartTimeUnixNano())
	}
	s := Span{
		TraceID:  idHex(sp.GetTraceId()),
		SpanID:   idHex(sp.GetSpanId()),
		ParentID: idHex(sp.GetParentSpanId()),
		Service:  service,
		Name:     sp.GetName(),
		Kind:     kindName(sp.GetKind()),
		Start:    start,
		Duration: d,
		Error:    sp.GetStatus().GetCode() == tracepb.Status_STATUS_CODE_ERROR,
		Attrs:    attrs(sp.GetAttributes()),
	}
	if s.Error {
		s.Status = sp.GetStatus().GetMessage()
	}
	for _, ev := range sp.GetEvents() {
		s.Events = append(s.Events, SpanEvent{Name: ev.GetName(), At: nanos(ev.GetTimeUnixNano()), Attrs: attrs(ev.GetAttributes())})
	}
	return s
}

func nanos(n uint64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, int64(n)).UTC()
}

// idHex is the lower-case hex of an id; "" for an absent or all-zero (invalid) id.
func idHex(b []byte) string {
	for _, c := range b {
		if c != 0 {
			return hex.EncodeToString(b)
		}
	}
	return ""
}

func kindName(k tracepb.Span_SpanKind) string {
	switch k {
	case tracepb.Span_SPAN_KIND_SERVER:
		return "server"
	case tracepb.Span_SPAN_KIND_CLIENT:
		return "client"
	case tracepb.Span_SPAN_KIND_PRODUCER:
		return "producer"
	case tracepb.Span_SPAN_KIND_CONSUMER:
		return "consumer"
	default:
		return "internal"
	}
}

func attrs(kvs []*commonpb.KeyValue) map[string]string {
	if len(kvs) == 0 {
		return nil
	}
	m := make(map[string]string, len(kvs))
	for _, kv := range kvs {
		m[kv.GetKey()] = flatten(kv.GetValue())
	}
	return m
}

// flatten renders an attribute value as a string: scalars as themselves, bytes as
// base64, arrays and key-value lists as JSON.
func flatten(v *commonpb.AnyValue) string {
	if v == nil {
		return ""
	}
	switch x := v.GetValue().(type) {
	case *commonpb.AnyValue_StringValue:
		return x.StringValue
	case *commonpb.AnyValue_BoolValue:
		return strconv.FormatBool(x.BoolValue)
	case *commonpb.AnyValue_IntValue:
		return strconv.FormatInt(x.IntValue, 10)
	case *commonpb.AnyValue_DoubleValue:
		return strconv.FormatFloat(x.DoubleValue, 'g', -1, 64)
	case *commonpb.AnyValue_BytesValue:
		return base64.StdEncoding.EncodeToString(x.BytesValue)
	case *commonpb.AnyValue_ArrayValue, *commonpb.AnyValue_KvlistValue:
		b, _ := json.Marshal(plain(v))
		return string(b)
	}
	return ""
}

// plain turns an AnyValue into a value encoding/json renders naturally.
func plain(v *commonpb.AnyValue) any {
	switch x := v.GetValue().(type) {
	case *commonpb.AnyValue_StringValue:
		return x.StringValue
	case *commonpb.AnyValue_BoolValue:
		return x.BoolValue
	case *commonpb.AnyValue_IntValue:
		return x.IntValue
	case *commonpb.AnyValue_DoubleValue:
		return x.DoubleValue
	case *commonpb.AnyValue_BytesValue:
		return x.BytesValue // base64 in JSON
	case *commonpb.AnyValue_ArrayValue:
		a := make([]any, 0, len(x.ArrayValue.GetValues()))
		for _, e := range x.ArrayValue.GetValues() {
			a = append(a, plain(e))
		}
		return a
	case *commonpb.AnyValue_KvlistValue:
		m := make(map[string]any, len(x.KvlistValue.GetValues()))
		for _, kv := range x.KvlistValue.GetValues() {
			m[kv.GetKey()] = plain(kv.GetValue())
		}
		return m
	}
	return nil
}

// sortSpans orders spans by start time (then id, so the order is stable).
func sortSpans(spans []Span) {
	sort.Slice(spans, func(i, j int) bool {
		if !spans[i].Start.Equal(spans[j].Start) {
			return spans[i].Start.Before(spans[j].Start)
		}
		return spans[i].SpanID < spans[j].SpanID
	})
}
