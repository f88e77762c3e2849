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
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// MaxOTLPBody bounds an export request, both as sent and once decompressed (a small
// gzip body can inflate to gigabytes). Beyond it the receiver answers 413.
const MaxOTLPBody = 8 << 20

// A body's bytes do not bound what decoding it allocates: an empty span is 2 bytes on
// the wire and some 500 in memory (the protobuf struct, then the dashboard's Span), so
// 8 MiB of empty spans (an 8 KiB gzip body) would decode into 4 million of them,
// gigabytes of heap. So the body is scanned before it is decoded (protowire over the
// protobuf, a token stream over JSON; the scan keeps nothing) counting the objects
// decoding would allocate, and a request over a limit is refused with 413 before
// anything is built. Within the limits a request costs its body (reading it allocates
// at most 4× MaxOTLPBody), its strings (no more bytes than the body) and at most
// MaxOTLPObjects structs of ~150 bytes (20 MiB); and at most maxConcurrentExports
// requests are read and decoded at once (the others wait their turn, bodies unread).
const (
	// MaxOTLPSpans bounds the spans in one request (the SDK's batches are 512).
	MaxOTLPSpans = 8192
	// MaxOTLPObjects bounds the messages of any kind in one request: resource and scope
	// spans, spans, attributes and their values, events, links, statuses.
	MaxOTLPObjects = 1 << 17
	// maxOTLPDepth bounds nesting (attribute values nest: arrays of key-value lists…).
	maxOTLPDepth         = 128
	maxConcurrentExports = 2
)

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
// 413 for a body over MaxOTLPBody or with more than MaxOTLPSpans spans or MaxOTLPObjects
// objects, 400 (with the reason in a text/plain body) for a body that does not decode.
// Per the OTLP spec none of these is worth retrying, and the exporters do not.
func OTLPHandler(sink func([]Span), log *slog.Logger) http.Handler {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	slots := make(chan struct{}, maxConcurrentExports)
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
		select {
		case slots <- struct{}{}:
			defer func() { <-slots }()
		case <-r.Context().Done():
			return // the exporter gave up waiting
		}
		body, status, err := readOTLPBody(w, r)
		if err != nil {
			log.Warn("otlp: rejected export", "status", status, "err", err, "remote", r.RemoteAddr)
			http.Error(w, err.Error(), status)
			return
		}
		var n otlpCount
		if ct == ctJSON {
			err = scanOTLPJSON(body, &n)
		} else {
			err = scanOTLPProto(body, exportRequest, 0, &n)
		}
		if le := (*limitError)(nil); errors.As(err, &le) {
			log.Warn("otlp: rejected export", "status", http.StatusRequestEntityTooLarge, "err", err, "remote", r.RemoteAddr)
			http.Error(w, err.Error(), http.StatusRequestEntityTooLarge)
			return
		}
		req := &coltracepb.ExportTraceServiceRequest{}
		if err == nil {
			if ct == ctJSON {
				err = unmarshalOTLPJSON(body, req)
			} else {
				err = proto.Unmarshal(body, req)
			}
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
	enc := strings.ToLower(strings.TrimSpace(r.Header.Get("Content-Encoding")))
	switch enc {
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
	// One byte more than allowed tells "exactly at the limit" from "beyond it". A
	// bytes.Buffer, not io.ReadAll: the buffer doubles as it grows (4× the body
	// allocated on the way, at most), where ReadAll's append grows a large slice by a
	// quarter at a time (5×); and it starts at the size sent when it is known.
	var buf bytes.Buffer
	if r.ContentLength > 0 && (enc == "" || enc == "identity") {
		buf.Grow(int(min(r.ContentLength, MaxOTLPBody)) + bytes.MinRead)
	}
	_, err := buf.ReadFrom(io.LimitReader(src, MaxOTLPBody+1))
	body := buf.Bytes()
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

// otlpCount is what a scan of a request found so far.
type otlpCount struct{ spans, objects int }

// limitError is a request over MaxOTLPSpans or MaxOTLPObjects (413).
type limitError struct{ what string }

func (e *limitError) Error() string {
	return "export request has more than " + e.what + ": send smaller batches"
}

func (c *otlpCount) add(span bool) error {
	c.objects++
	if span {
		c.spans++
	}
	switch {
	case c.spans > MaxOTLPSpans:
		return &limitError{fmt.Sprintf("%d spans", MaxOTLPSpans)}
	case c.objects > MaxOTLPObjects:
		return &limitError{fmt.Sprintf("%d objects (spans, attributes, events, links…)", MaxOTLPObjects)}
	}
	return nil
}

var (
	exportRequest = (&coltracepb.ExportTraceServiceRequest{}).ProtoReflect().Descriptor()
	spanMessage   = (&tracepb.Span{}).ProtoReflect().Descriptor().FullName()
)

// scanOTLPProto walks b, the wire form of a message md describes, without decoding it,
// and counts into c every embedded message decoding would allocate (a field of message
// type is a length-delimited record: each one is an object; everything else — numbers,
// strings, unknown fields — costs no more than its bytes). It stops at the first limit
// passed, or at malformed data.
func scanOTLPProto(b []byte, md protoreflect.MessageDescriptor, depth int, c *otlpCount) error {
	if depth > maxOTLPDepth {
		return fmt.Errorf("nested more than %d deep", maxOTLPDepth)
	}
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		if typ != protowire.BytesType {
			if n = protowire.ConsumeFieldValue(num, typ, b); n < 0 {
				return protowire.ParseError(n)
			}
			b = b[n:]
			continue
		}
		v, n := protowire.ConsumeBytes(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		fd := md.Fields().ByNumber(num)
		if fd == nil || fd.Message() == nil {
			continue
		}
		if err := c.add(fd.Message().FullName() == spanMessage); err != nil {
			return err
		}
		if err := scanOTLPProto(v, fd.Message(), depth+1, c); err != nil {
			return err
		}
	}
	return nil
}

// scanOTLPJSON checks that body is one JSON object and counts into c its objects (every
// message is one in OTLP/JSON; protojson allocates nothing lasting for the rest) and
// the spans among them (the objects in a "spans" array), reading tokens one at a time
// and keeping only the path to the current one.
func scanOTLPJSON(body []byte, c *otlpCount) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	type frame struct {
		array   bool
		wantKey bool   // an object whose next token is a key
		key     string // an object's current key; an array's key in its parent
	}
	var stack []frame
	done := false
	for {
		tok, err := dec.Token()
		if err == io.EOF && len(stack) == 0 {
			if !done {
				return errors.New("invalid JSON: empty body")
			}
			return nil
		}
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return fmt.Errorf("invalid JSON: %w", err)
		}
		if done {
			return errors.New("invalid JSON: data after the top-level object")
		}
		if key, ok := tok.(string); ok && len(stack) > 0 && stack[len(stack)-1].wantKey {
			top := &stack[len(stack)-1]
			top.key, top.wantKey = key, false
			continue
		}
		switch tok {
		case json.Delim('{'), json.Delim('['):
			if len(stack) == 0 && tok != json.Delim('{') {
				return errors.New("top level must be a JSON object")
			}
			if len(stack) >= maxOTLPDepth {
				return fmt.Errorf("JSON nested more than %d deep", maxOTLPDepth)
			}
			f := frame{array: tok == json.Delim('['), wantKey: tok == json.Delim('{')}
			if len(stack) > 0 {
				parent := stack[len(stack)-1]
				if f.array {
					f.key = parent.key
				} else if err := c.add(parent.array && parent.key == "spans"); err != nil {
					return err
				}
			}
			stack = append(stack, f)
			continue
		case json.Delim('}'), json.Delim(']'):
			stack = stack[:len(stack)-1]
		default:
			if len(stack) == 0 {
				return errors.New("top level must be a JSON object")
			}
		}
		// A value ended: the object it was in wants a key next.
		if len(stack) == 0 {
			done = true
		} else if !stack[len(stack)-1].array {
			stack[len(stack)-1].wantKey = true
		}
	}
}

// unmarshalOTLPJSON decodes OTLP/JSON. It is proto3 JSON with one exception the OTLP
// spec makes: traceId, spanId and parentSpanId (in spans and span links) are hex
// strings, where protojson expects base64 for bytes fields. A hex string is valid
// base64 too (hex digits are base64 digits, and ids' 32 and 16 digits need no padding),
// so protojson decodes it, to the wrong bytes; encoding those back to base64 gives the
// hex string exactly, which is then decoded as hex. Unknown fields are ignored, as the
// spec requires of receivers.
func unmarshalOTLPJSON(body []byte, req *coltracepb.ExportTraceServiceRequest) error {
	if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(body, req); err != nil {
		return err
	}
	for _, rs := range req.GetResourceSpans() {
		for _, ss := range rs.GetScopeSpans() {
			for _, sp := range ss.GetSpans() {
				err := errors.Join(hexID("traceId", &sp.TraceId), hexID("spanId", &sp.SpanId),
					hexID("parentSpanId", &sp.ParentSpanId))
				for _, l := range sp.GetLinks() {
					err = errors.Join(err, hexID("links.traceId", &l.TraceId), hexID("links.spanId", &l.SpanId))
				}
				if err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// hexID turns an id protojson decoded as base64 into the bytes of the hex it was.
func hexID(name string, id *[]byte) error {
	if len(*id) == 0 {
		return nil
	}
	sent := base64.StdEncoding.EncodeToString(*id)
	b, err := hex.DecodeString(sent)
	if err != nil {
		return fmt.Errorf("%s %q is not hex (OTLP/JSON ids are hex strings)", name, sent)
	}
	*id = b
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
		TraceID:  idHex(sp.GetTraceId(), 16),
		SpanID:   idHex(sp.GetSpanId(), 8),
		ParentID: idHex(sp.GetParentSpanId(), 8),
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

// idHex is the lower-case hex of an id of size bytes (16 for a trace, 8 for a span);
// "" for an absent, all-zero or other-sized (invalid) id.
func idHex(b []byte, size int) string {
	if len(b) != size {
		return ""
	}
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
