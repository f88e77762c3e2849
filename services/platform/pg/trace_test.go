package pg_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"microlab/services/platform/pg"
	"microlab/services/platform/testenv"
)

func TestSpanName(t *testing.T) {
	for _, tc := range []struct{ sql, want string }{
		{`INSERT INTO inbox (consumer, event_id, event_type) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING`, "INSERT inbox"},
		{`insert into "order_steps" (order_id) values ($1)`, "INSERT order_steps"},
		{`UPDATE orders SET status = $2 WHERE order_id = $1 AND status = 'pending'`, "UPDATE orders"},
		{`SELECT order_id, sku FROM order_items WHERE order_id = ANY($1) ORDER BY order_id, line`, "SELECT order_items"},
		{`SELECT count(*), min(created_at) FROM outbox WHERE sent_at IS NULL`, "SELECT outbox"},
		{`SELECT EXISTS (SELECT 1 FROM releases WHERE order_id = $1)`, "SELECT releases"},
		{`SELECT pg_notify($1, '')`, "SELECT pg_notify"},
		{`SELECT pg_advisory_xact_lock(hashtextextended($1, 0))`, "SELECT pg_advisory_xact_lock"},
		{`-- name: x
		  DELETE FROM outbox WHERE sent_at < now()`, "DELETE outbox"},
		{`SELECT 'FROM nowhere', 1`, "SELECT"},
		{`INSERT INTO order_steps (order_id, name) SELECT o.order_id, 'saga' FROM orders o`, "INSERT order_steps"},
		{`SELECT order_id, (SELECT coalesce(json_agg(i.sku), '[]') FROM order_items i WHERE i.order_id = o.order_id)
		  FROM orders o WHERE o.order_id = $1`, "SELECT orders"},
		{`INSERT INTO outbox (event_id) VALUES ($1) RETURNING pg_notify($2, '')`, "INSERT outbox"},
		{`LISTEN outbox`, "LISTEN"},
		{``, "UNKNOWN"},
	} {
		if got := pg.SpanName(tc.sql); got != tc.want {
			t.Errorf("SpanName(%q) = %q, want %q", tc.sql, got, tc.want)
		}
	}
}

// A transaction traced with pg.Tracer shows one span per statement it sent: none for
// BEGIN and COMMIT, none for the prepare pgx does the first time a connection runs a
// statement, and a batch is one BATCH span with a child per statement. Each span keeps
// its statement (db.query.text).
func TestTracerOneSpanPerStatement(t *testing.T) {
	t.Parallel()
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pool, err := pg.Open(ctx, testenv.DB(t, testenv.Name("t_pgtrace_")), func(c *pgxpool.Config) {
		c.ConnConfig.Tracer = pg.NewTracer(tp)
	})
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	if _, err := pool.Exec(ctx, `CREATE TABLE stock (sku text PRIMARY KEY, on_hand int NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	ctx, parent := tp.Tracer("test").Start(ctx, "process payment.authorized")
	err = pg.InTx(ctx, pool, func(ctx context.Context) error {
		q := pg.Q(ctx, pool)
		if _, err := q.Exec(ctx, `INSERT INTO stock (sku, on_hand) VALUES ($1, $2)`, "LAB-MUG", 10); err != nil {
			return err
		}
		var n int
		if err := q.QueryRow(ctx, `SELECT on_hand FROM stock WHERE sku = $1`, "LAB-MUG").Scan(&n); err != nil {
			return err
		}
		b := &pgx.Batch{}
		b.Queue(`UPDATE stock SET on_hand = on_hand - $2 WHERE sku = $1`, "LAB-MUG", 1)
		b.Queue(`SELECT pg_notify($1, '')`, "outbox")
		return pg.Q(ctx, pool).SendBatch(ctx, b).Close()
	})
	parent.End()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	byName := map[string]sdktrace.ReadOnlySpan{}
	for _, s := range rec.Ended() {
		if s.SpanContext().TraceID() == parent.SpanContext().TraceID() && s.Name() != "process payment.authorized" {
			names = append(names, s.Name())
			byName[s.Name()] = s
		}
	}
	want := []string{"INSERT stock", "SELECT stock", "UPDATE stock", "SELECT pg_notify", "BATCH"}
	if len(names) != len(want) {
		t.Fatalf("spans %v, want %v", names, want)
	}
	for i := range want {
		if names[i] != want[i] {
			t.Fatalf("spans %v, want %v", names, want)
		}
	}
	if b := byName["BATCH"]; byName["UPDATE stock"].Parent().SpanID() != b.SpanContext().SpanID() ||
		b.Parent().SpanID() != parent.SpanContext().SpanID() {
		t.Error("the batch's statements are not children of its BATCH span, or BATCH not of the handler's")
	}
	ins := byName["INSERT stock"]
	attrs := map[string]string{}
	for _, kv := range ins.Attributes() {
		attrs[string(kv.Key)] = kv.Value.Emit()
	}
	if attrs["db.query.text"] != `INSERT INTO stock (sku, on_hand) VALUES ($1, $2)` || attrs["db.operation.name"] != "INSERT" ||
		attrs["db.collection.name"] != "stock" || attrs["db.system.name"] != "postgresql" {
		t.Errorf("INSERT span attributes %v", attrs)
	}
}
