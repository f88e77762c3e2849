package ingest

import (
	"bytes"
	"compress/gzip"
	"encoding/hex"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// fuzzMaxBody bounds the bodies FuzzOTLPHandler sends, to keep each execution fast:
// the handler's own limit (MaxOTLPBody, 8 MiB) is a constant, so a larger body would
// only cost time. A body sent gzipped as it is (mode "raw gzip") can still inflate up
// to that limit, as a real one could.
const fuzzMaxBody = 64 << 10

// The content types and encodings FuzzOTLPHandler sends, chosen by its mode byte: the
// two low bits pick the type, the next two the encoding.
var (
	fuzzContentTypes = [4]string{ctProtobuf, ctJSON, "application/json; charset=utf-8", "text/plain"}
	fuzzEncodings    = [4]string{"none", "gzip", "raw gzip", "br"}
)

// FuzzOTLPHandler holds the OTLP receiver to its contract whatever a client sends (it
// listens for any process that cares to export): it never panics and never answers 5xx,
// and
//   - 415 exactly when the content type or encoding is not one it takes;
//   - 200 only for a body that decodes as an ExportTraceServiceRequest (checked with
//     proto.Unmarshal or protojson, not with the handler's own code), answered with an
//     ExportTraceServiceResponse in the request's encoding, the sink given every span of
//     it (no more than MaxOTLPSpans) once, with well-formed ids, or not called for none;
//   - 413 only for a body that could be over a limit: bigger than MaxOTLPBody once
//     decompressed, or big enough to hold more than MaxOTLPSpans spans (an object costs
//     at least 2 bytes in either encoding);
//   - 400, with a reason, for everything else; and the sink sees nothing it refused.
//
// mode picks the content type (protobuf, JSON, JSON with a charset, text) and the
// encoding: none, gzip (the test compresses body), raw gzip (body is sent as a gzip
// stream as it is: the gzip reader is fuzzed too) or br (unsupported). The seed corpus
// is in testdata/fuzz/FuzzOTLPHandler: the requests the other tests send (the SDK
// exporter's own, plain and gzipped, the spec's JSON example, the bad inputs and the
// limit tests' shapes, small) and odd ones (deep nesting, bad ids, huge numbers,
// duplicate keys, invalid UTF-8).
func FuzzOTLPHandler(f *testing.F) {
	var calls, got int
	var ids []string
	h := OTLPHandler(func(s []Span) {
		calls++
		got += len(s)
		for _, sp := range s {
			ids = append(ids, sp.TraceID, sp.SpanID, sp.ParentID)
		}
	}, slog.New(slog.DiscardHandler))
	var zbuf bytes.Buffer
	zw := gzip.NewWriter(&zbuf) // reused: a new writer allocates some 800 KB

	f.Fuzz(func(t *testing.T, mode uint8, body []byte) {
		if len(body) > fuzzMaxBody {
			t.Skip("body over the fuzz target's size bound")
		}
		ct, enc := fuzzContentTypes[mode&3], fuzzEncodings[mode>>2&3]
		calls, got, ids = 0, 0, ids[:0]

		// What the handler should make of it: the payload once decompressed, and
		// whether decompressing it fails or passes the limit.
		wire, payload, gzipErr, over := body, body, false, false
		switch enc {
		case "gzip":
			zbuf.Reset()
			zw.Reset(&zbuf)
			if _, err := zw.Write(body); err != nil || zw.Close() != nil {
				t.Fatalf("gzip: %v", err)
			}
			wire = zbuf.Bytes()
		case "raw gzip":
			payload, gzipErr, over = gunzipBounded(body)
		}
		r := httptest.NewRequest(http.MethodPost, "/v1/traces", bytes.NewReader(wire))
		r.Header.Set("Content-Type", ct)
		switch enc {
		case "gzip", "raw gzip":
			r.Header.Set("Content-Encoding", "gzip")
		case "br":
			r.Header.Set("Content-Encoding", "br")
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		status, answer := w.Code, w.Body.Bytes()

		if status >= 500 {
			t.Fatalf("%s, %s: answered %d: %s", ct, enc, status, answer)
		}
		if status != http.StatusOK && calls > 0 {
			t.Fatalf("%s, %s: answered %d but gave the sink %d spans", ct, enc, status, got)
		}
		unsupported := ct == "text/plain" || enc == "br"
		if unsupported != (status == http.StatusUnsupportedMediaType) {
			t.Fatalf("%s, %s: answered %d: %s", ct, enc, status, answer)
		}
		switch status {
		case http.StatusUnsupportedMediaType:
		case http.StatusOK:
			if gzipErr || over {
				t.Fatalf("%s, %s: 200 for a body that does not decompress (or is over the limit)", ct, enc)
			}
			checkAccepted(t, ct, payload, w, calls, got, ids)
		case http.StatusRequestEntityTooLarge:
			if !over && len(payload) <= 2*MaxOTLPSpans {
				t.Fatalf("%s, %s: 413 for %d bytes, too few to pass a limit: %s", ct, enc, len(payload), answer)
			}
		case http.StatusBadRequest:
			if over {
				t.Fatalf("%s, %s: 400 for a body over the limit, want 413: %s", ct, enc, answer)
			}
			if len(bytes.TrimSpace(answer)) == 0 {
				t.Fatalf("%s, %s: 400 without a reason", ct, enc)
			}
		default:
			t.Fatalf("%s, %s: answered %d, want 200, 400, 413 or 415: %s", ct, enc, status, answer)
		}
	})
}

// gunzipBounded decompresses b as the handler does (multistream, at most MaxOTLPBody+1
// bytes read): the payload, whether the stream is malformed, whether it is over the limit.
func gunzipBounded(b []byte) (payload []byte, malformed, over bool) {
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		return nil, true, false
	}
	payload, err = io.ReadAll(io.LimitReader(zr, MaxOTLPBody+1))
	if err != nil {
		return nil, true, false
	}
	return payload, false, len(payload) > MaxOTLPBody
}

// checkAccepted checks a 200: the payload decodes as OTLP in its encoding (by the
// protobuf libraries' own decoders), the answer is an ExportTraceServiceResponse in the
// same encoding, and the sink was given every span, with ids of the right form.
func checkAccepted(t *testing.T, ct string, payload []byte, w *httptest.ResponseRecorder, calls, got int, ids []string) {
	t.Helper()
	req, resp := &coltracepb.ExportTraceServiceRequest{}, &coltracepb.ExportTraceServiceResponse{}
	var err, respErr error
	wantCT := ctProtobuf
	if ct == ctProtobuf {
		err, respErr = proto.Unmarshal(payload, req), proto.Unmarshal(w.Body.Bytes(), resp)
	} else {
		wantCT = ctJSON
		err = protojson.UnmarshalOptions{DiscardUnknown: true}.Unmarshal(payload, req)
		respErr = protojson.Unmarshal(w.Body.Bytes(), resp)
	}
	if err != nil {
		t.Fatalf("%s: 200 for a body that does not decode as OTLP: %v", ct, err)
	}
	if w.Header().Get("Content-Type") != wantCT || respErr != nil {
		t.Fatalf("%s: answered %q %q (%v), want an ExportTraceServiceResponse in %s", ct, w.Header().Get("Content-Type"), w.Body.Bytes(), respErr, wantCT)
	}
	spans := 0
	for _, rs := range req.GetResourceSpans() {
		for _, ss := range rs.GetScopeSpans() {
			spans += len(ss.GetSpans())
		}
	}
	switch {
	case spans > MaxOTLPSpans:
		t.Fatalf("%s: took %d spans, over the limit of %d", ct, spans, MaxOTLPSpans)
	case got != spans || calls != min(spans, 1):
		t.Fatalf("%s: the request has %d spans; the sink was called %d times with %d", ct, spans, calls, got)
	}
	for i, id := range ids {
		size := 8
		if i%3 == 0 {
			size = 16 // a trace id
		}
		if b, err := hex.DecodeString(id); id != "" && (err != nil || len(b) != size || hex.EncodeToString(b) != id) {
			t.Fatalf("%s: the sink was given id %q, want \"\" or %d lower-case hex digits", ct, id, 2*size)
		}
	}
}
