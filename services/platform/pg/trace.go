package pg

import (
	"cmp"
	"context"
	"strings"

	"github.com/exaring/otelpgx"
	"github.com/jackc/pgx/v5"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
)

// Tracer is the SQL tracing of every pool Open makes (pgx's ConnConfig.Tracer): otelpgx,
// shaped so that a trace waterfall shows one span per statement a handler sends, named
// for what it does ("INSERT outbox", "SELECT payment_ledger").
//
// What otelpgx would add and this leaves out, because a learner reads the waterfall and
// every span costs CPU to make, export and store:
//   - prepare spans: pgx prepares a statement the first time a connection runs it (its
//     statement cache), which showed up as a second span for the same statement;
//   - connect and pool-acquire spans;
//   - BEGIN, COMMIT and ROLLBACK: two spans per transaction that say nothing the
//     handler's own span does not (a failed commit fails the handler, and its span).
//
// Tracer implements pgx's QueryTracer, BatchTracer and CopyFromTracer only; pgx asks a
// tracer for each kind with a type assertion, so the kinds it lacks are never traced.
type Tracer struct {
	otel *otelpgx.Tracer
}

// NewTracer traces SQL into tp's traces; only statements made while handling a sampled
// request or message make spans (otelpgx makes none without a recording parent).
func NewTracer(tp trace.TracerProvider) *Tracer {
	return &Tracer{otel: otelpgx.NewTracer(otelpgx.WithTracerProvider(tp), otelpgx.WithDisableAcquireTracer(),
		otelpgx.WithSpanNameFunc(SpanName))}
}

var (
	_ pgx.QueryTracer    = (*Tracer)(nil)
	_ pgx.BatchTracer    = (*Tracer)(nil)
	_ pgx.CopyFromTracer = (*Tracer)(nil)
)

type untracedKey struct{}

// TraceQueryStart starts a statement's span, unless it is transaction control.
func (t *Tracer) TraceQueryStart(ctx context.Context, conn *pgx.Conn, data pgx.TraceQueryStartData) context.Context {
	op, target := summarize(data.SQL)
	if txControl(data.SQL) {
		// Marked, so TraceQueryEnd does not end the span in ctx: the handler's.
		return context.WithValue(ctx, untracedKey{}, true)
	}
	ctx = t.otel.TraceQueryStart(ctx, conn, data)
	if target != "" {
		// otelpgx sets db.operation.name to the span name; the convention wants the
		// operation alone, and the table in db.collection.name.
		if span := trace.SpanFromContext(ctx); span.IsRecording() {
			span.SetAttributes(semconv.DBOperationName(op), semconv.DBCollectionName(target))
		}
	}
	return ctx
}

// TraceQueryEnd ends the span TraceQueryStart started.
func (t *Tracer) TraceQueryEnd(ctx context.Context, conn *pgx.Conn, data pgx.TraceQueryEndData) {
	if ctx.Value(untracedKey{}) != nil {
		return
	}
	t.otel.TraceQueryEnd(ctx, conn, data)
}

// TraceBatchStart starts the span of a batch (pgx.Batch: several statements sent in one
// round trip), named BATCH; each statement is a child span of it. Transaction control
// travels in batches too (a Unit sends BEGIN with its first statement and COMMIT with
// its queued ones): it makes no span, and a batch that is one statement besides is that
// statement's span alone, as if it had been sent by itself.
func (t *Tracer) TraceBatchStart(ctx context.Context, conn *pgx.Conn, data pgx.TraceBatchStartData) context.Context {
	var only *pgx.QueuedQuery
	n := 0
	if data.Batch != nil {
		for _, q := range data.Batch.QueuedQueries {
			if !txControl(q.SQL) {
				only = q
				n++
			}
		}
	}
	switch n {
	case 0:
		return context.WithValue(ctx, untracedKey{}, true)
	case 1:
		return context.WithValue(t.TraceQueryStart(ctx, conn, pgx.TraceQueryStartData{SQL: only.SQL, Args: only.Arguments}),
			soloKey{}, true)
	}
	ctx = t.otel.TraceBatchStart(ctx, conn, data)
	if span := trace.SpanFromContext(ctx); span.IsRecording() {
		span.SetName("BATCH")
		span.SetAttributes(semconv.DBOperationName("BATCH"))
	}
	return ctx
}

// soloKey marks a batch traced as its one statement's span (see TraceBatchStart).
type soloKey struct{}

// TraceBatchQuery records one statement of a batch.
func (t *Tracer) TraceBatchQuery(ctx context.Context, conn *pgx.Conn, data pgx.TraceBatchQueryData) {
	switch {
	case ctx.Value(untracedKey{}) != nil || txControl(data.SQL):
	case ctx.Value(soloKey{}) != nil: // the batch's span is this statement's
		if span := trace.SpanFromContext(ctx); data.Err == nil && span.IsRecording() {
			span.SetAttributes(otelpgx.RowsAffectedKey.Int64(data.CommandTag.RowsAffected()))
		}
	default:
		t.otel.TraceBatchQuery(ctx, conn, data)
	}
}

// TraceBatchEnd ends the batch's span.
func (t *Tracer) TraceBatchEnd(ctx context.Context, conn *pgx.Conn, data pgx.TraceBatchEndData) {
	switch {
	case ctx.Value(untracedKey{}) != nil:
	case ctx.Value(soloKey{}) != nil:
		t.otel.TraceQueryEnd(ctx, conn, pgx.TraceQueryEndData{Err: data.Err})
	default:
		t.otel.TraceBatchEnd(ctx, conn, data)
	}
}

// txControl reports whether sql only begins or ends a transaction.
func txControl(sql string) bool {
	switch op, _ := summarize(sql); op {
	case "BEGIN", "COMMIT", "ROLLBACK", "END":
		return true
	}
	return false
}

// TraceCopyFromStart starts a COPY's span.
func (t *Tracer) TraceCopyFromStart(ctx context.Context, conn *pgx.Conn, data pgx.TraceCopyFromStartData) context.Context {
	return t.otel.TraceCopyFromStart(ctx, conn, data)
}

// TraceCopyFromEnd ends a COPY's span.
func (t *Tracer) TraceCopyFromEnd(ctx context.Context, conn *pgx.Conn, data pgx.TraceCopyFromEndData) {
	t.otel.TraceCopyFromEnd(ctx, conn, data)
}

// SpanName names a statement's span as the OpenTelemetry database conventions suggest,
// "{operation} {target}": "INSERT outbox", "UPDATE orders", "SELECT payment_ledger",
// "SELECT pg_notify" (a SELECT of no table names the function it calls), or the
// operation alone when there is no target to find.
func SpanName(sql string) string {
	op, target := summarize(sql)
	if target == "" {
		return op
	}
	return op + " " + target
}

// summarize reads a statement's operation (its first word, upper-cased) and target:
// the table after INSERT INTO, UPDATE or DELETE FROM, the first FROM outside
// parentheses of anything else (the first one inside them when there is none outside:
// SELECT EXISTS (SELECT 1 FROM releases ...)), or, lacking a FROM, the first function
// called. It looks at words only (string literals skipped), not at SQL's grammar: good
// enough to name a span, never relied on.
func summarize(sql string) (op, target string) {
	s := scanner{src: sql}
	w, _ := s.word()
	if w == "" {
		return "UNKNOWN", ""
	}
	op = strings.ToUpper(w)
	var fn, nested string
	for range 256 { // a name is found early or not at all
		w, call := s.word()
		switch {
		case w == "":
			return op, cmp.Or(nested, fn)
		case op == "UPDATE":
			return op, w
		case strings.EqualFold(w, "INTO") && op == "INSERT", strings.EqualFold(w, "FROM") && s.at == 0:
			t, _ := s.word()
			return op, t
		case strings.EqualFold(w, "FROM") && nested == "":
			nested, _ = s.word()
		case call && fn == "" && op != "INSERT":
			fn = w
		}
	}
	return op, cmp.Or(nested, fn)
}

// scanner yields the words of SQL text: identifiers (dots allowed, quotes dropped),
// skipping punctuation, numbers, comments and string literals.
type scanner struct {
	src   string
	i     int
	depth int // parentheses open at the scanning position
	at    int // parentheses open at the start of the word last returned
}

// word returns the next word, "" at the end, and whether a "(" follows it (a call).
func (s *scanner) word() (string, bool) {
	for s.i < len(s.src) {
		c := s.src[s.i]
		switch {
		case c == '\'':
			if j := strings.IndexByte(s.src[s.i+1:], '\''); j >= 0 {
				s.i += j + 2
			} else {
				s.i = len(s.src)
			}
		case c == '-' && strings.HasPrefix(s.src[s.i:], "--"):
			if j := strings.IndexByte(s.src[s.i:], '\n'); j >= 0 {
				s.i += j + 1
			} else {
				s.i = len(s.src)
			}
		case c == '/' && strings.HasPrefix(s.src[s.i:], "/*"):
			if j := strings.Index(s.src[s.i+2:], "*/"); j >= 0 {
				s.i += j + 4
			} else {
				s.i = len(s.src)
			}
		case isWordStart(c):
			start := s.i
			s.at = s.depth
			for s.i < len(s.src) && (isWordStart(s.src[s.i]) || isDigit(s.src[s.i]) || s.src[s.i] == '.') {
				s.i++
			}
			w := strings.ReplaceAll(s.src[start:s.i], `"`, "")
			j := s.i
			for j < len(s.src) && (s.src[j] == ' ' || s.src[j] == '\t' || s.src[j] == '\n') {
				j++
			}
			return w, j < len(s.src) && s.src[j] == '('
		case isDigit(c) || c == '$':
			for s.i++; s.i < len(s.src) && isDigit(s.src[s.i]); s.i++ {
			}
		case c == '(':
			s.depth++
			s.i++
		case c == ')':
			s.depth--
			s.i++
		default:
			s.i++
		}
	}
	return "", false
}

func isWordStart(c byte) bool {
	return c == '_' || c == '"' || ('a' <= c && c <= 'z') || ('A' <= c && c <= 'Z')
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }
