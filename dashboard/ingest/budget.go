package ingest

import (
	"encoding/json"
	"fmt"
	"sort"
	"unicode/utf8"
)

// Budget bounds a store in bytes, beside the counts it is built with. Counts alone do
// not bound memory: a span or a message can be as large as its sender likes (a 1 MiB
// User-Agent on every request, a 5 MB message body), so 2000 traces may be 20 MB or
// 20 GB. Zero fields take the store's defaults.
type Budget struct {
	// Bytes is the most the store holds, by an estimate of each item's size in memory
	// (its strings, plus a fixed share for the structures around them). Beyond it the
	// oldest items are evicted first.
	Bytes int64
	// ValueBytes is the longest single value kept (an attribute value, a span name, a
	// message payload); a longer one is cut there and ends with a marker that says how
	// much was cut (TruncatedMarker). At most a 64th of Bytes.
	ValueBytes int
}

// Default budgets: a lab's steady traffic needs a fraction of them (a checkout's trace
// is some 30 KB, a message 1 KB), so they only bite when something sends far more.
const (
	DefaultTraceBytes      = 64 << 20
	DefaultTraceValueBytes = 4 << 10 // as the services' OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT
	DefaultEventBytes      = 16 << 20
	DefaultEventValueBytes = 16 << 10
)

// TruncatedMarker ends a value the dashboard cut, with the number of bytes it cut.
const TruncatedMarker = "…[truncated %d bytes]"

// withDefaults fills zero fields, keeps Bytes to at least 64 KiB and ValueBytes to a
// 64th of Bytes (and at least 16 bytes), so that one item can never take the budget.
func (b Budget) withDefaults(bytes int64, value int) Budget {
	if b.Bytes <= 0 {
		b.Bytes = bytes
	}
	b.Bytes = max(b.Bytes, 64<<10)
	if b.ValueBytes <= 0 {
		b.ValueBytes = value
	}
	b.ValueBytes = int(max(min(int64(b.ValueBytes), b.Bytes/64), 16))
	return b
}

// clip returns s cut to at most n bytes (at a rune boundary) followed by the marker,
// and whether it cut. The result is a fresh string: it does not keep s's memory alive.
func clip(s string, n int) (string, bool) {
	if len(s) <= n {
		return s, false
	}
	n = runeStart(s, n)
	return s[:n] + fmt.Sprintf(TruncatedMarker, len(s)-n), true
}

// clippedJSON is p's first n bytes and the marker, as a JSON string: p need not be
// valid JSON once cut, the string is (invalid UTF-8 becomes U+FFFD).
func clippedJSON(p []byte, n int) json.RawMessage {
	n = runeStart(p, min(n, len(p)))
	b, _ := json.Marshal(string(p[:n]) + fmt.Sprintf(TruncatedMarker, len(p)-n))
	return b
}

// runeStart is the largest i ≤ n (n < len(s)) where a rune of s starts, or 0.
func runeStart[S ~string | ~[]byte](s S, n int) int {
	n = max(n, 0)
	for n > 0 && n < len(s) && !utf8.RuneStart(s[n]) {
		n--
	}
	return n
}

// clipMap returns m with every key and value clipped to n bytes: m itself when nothing
// is too long (the common case costs no copy), else a new map.
func clipMap(m map[string]string, n int) (map[string]string, bool) {
	over := false
	for k, v := range m {
		if len(k) > n || len(v) > n {
			over = true
			break
		}
	}
	if !over {
		return m, false
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		k, _ = clip(k, n)
		v, _ = clip(v, n)
		out[k] = v
	}
	return out, true
}

// keepFirst returns m with at most n entries, those of the smallest keys (so what is
// kept does not depend on map order), and whether it dropped any.
func keepFirst(m map[string]string, n int) (map[string]string, bool) {
	if len(m) <= n {
		return m, false
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := make(map[string]string, n)
	for _, k := range keys[:n] {
		out[k] = m[k]
	}
	return out, true
}

// Size estimates: what an item costs beyond its strings' bytes (struct, string and
// slice headers, map buckets), rounded up. They need not be exact, only not far below
// the truth, so the budget holds.
const (
	spanOverhead  = 256 // the Span struct and its slot in the trace's slice
	traceOverhead = 256 // a trace's entry, its map slot and its summary
	mapOverhead   = 64  // a map's header
	entryOverhead = 48  // one map entry: two string headers and the map's own share
	eventOverhead = 256 // an Event (or a SpanEvent) struct and its slot
)

func mapBytes(m map[string]string) int64 {
	if m == nil {
		return 0
	}
	n := int64(mapOverhead)
	for k, v := range m {
		n += int64(entryOverhead + len(k) + len(v))
	}
	return n
}

// spanBytes is a span's estimated size in memory.
func spanBytes(s *Span) int64 {
	n := int64(spanOverhead + len(s.TraceID) + len(s.SpanID) + len(s.ParentID) + len(s.Service) +
		len(s.Name) + len(s.Kind) + len(s.Status))
	n += mapBytes(s.Attrs)
	for i := range s.Events {
		n += int64(eventOverhead+len(s.Events[i].Name)) + mapBytes(s.Events[i].Attrs)
	}
	return n
}

// eventBytes is an event's estimated size in memory.
func eventBytes(e *Event) int64 {
	return int64(eventOverhead+len(e.ID)+len(e.Type)+len(e.Source)+len(e.CorrelationID)+
		len(e.Exchange)+len(e.RoutingKey)+len(e.TraceID)+len(e.Payload)) + mapBytes(e.Headers)
}
