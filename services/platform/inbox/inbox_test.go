package inbox_test

import (
	"context"
	"io"
	"io/fs"
	"log/slog"
	"sync/atomic"
	"testing"

	"microlab/services/platform"
	"microlab/services/platform/bus"
	"microlab/services/platform/inbox"
	"microlab/services/platform/pg"
	"microlab/services/platform/testenv"
)

// The same message delivered twice applies once with the inbox on and twice with it off,
// and the effect commits (or not) together with the inbox row.
func TestInboxDedupesInTheEffectsTransaction(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, err := pg.Open(ctx, testenv.DB(t, testenv.Name("t_inbox_")))
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	kit, _ := fs.Sub(platform.Migrations(), "migrations")
	if err := pg.Migrate(ctx, pool, kit, "goose_platform"); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `CREATE TABLE effects (message_id text NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	var on atomic.Bool
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	failNext := false
	h := bus.Chain(func(ctx context.Context, d bus.Delivery) error {
		if _, err := pg.Q(ctx, pool).Exec(ctx, `INSERT INTO effects VALUES ($1)`, d.MessageID); err != nil {
			return err
		}
		if failNext {
			failNext = false
			return context.DeadlineExceeded // the effect and the inbox row roll back together
		}
		return nil
	}, inbox.Middleware(pool, "consumer", on.Load, log, nil))

	count := func(id string) int {
		var n int
		if err := pool.QueryRow(ctx, `SELECT count(*) FROM effects WHERE message_id = $1`, id).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	for _, tc := range []struct {
		id    string
		inbox bool
		want  int
	}{{"m-on", true, 1}, {"m-off", false, 2}} {
		on.Store(tc.inbox)
		for range 2 {
			if err := h(ctx, bus.Delivery{MessageID: tc.id, Type: "order.placed"}); err != nil {
				t.Fatal(err)
			}
		}
		if got := count(tc.id); got != tc.want {
			t.Errorf("inbox=%v: effect applied %d times, want %d", tc.inbox, got, tc.want)
		}
	}

	on.Store(true)
	failNext = true
	if err := h(ctx, bus.Delivery{MessageID: "m-retry", Type: "order.placed"}); err == nil {
		t.Fatal("want the handler's error")
	}
	if err := h(ctx, bus.Delivery{MessageID: "m-retry", Type: "order.placed"}); err != nil {
		t.Fatal(err)
	}
	if got := count("m-retry"); got != 1 {
		t.Fatalf("a failed attempt must leave no inbox row behind: effect applied %d times after retry, want 1", got)
	}
	if err := h(ctx, bus.Delivery{Type: "order.placed"}); err == nil {
		t.Fatal("a message without id must be refused")
	}
}
