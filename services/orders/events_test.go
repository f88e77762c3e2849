package main

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"microlab/services/contracts"
	"microlab/services/platform/bus"
	"microlab/services/platform/control"
	"microlab/services/platform/pg"
	"microlab/services/platform/testenv"
)

// ev builds an event of a stream for the fold tests.
func ev(version int, typ, detail string, at time.Time) Event {
	name, status := step(typ)
	return Event{Version: version, Type: typ, OccurredAt: at, Data: eventData{Name: name, Status: status, Detail: detail}}
}

func TestReplay(t *testing.T) {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	placed := ev(1, "order.placed", "1 line(s)", at(0))
	placed.Data.Order = &placedData{UserID: "u1", SagaMode: contracts.ModeChoreography, TotalCents: 500,
		Currency: "EUR", CardLast4: "4242", CreatedAt: t0, Items: []contracts.Item{{SKU: "LAB-MUG", Qty: 1, PriceCents: 500}}}
	for _, c := range []struct {
		name   string
		events []Event
		status string
		reason string
		steps  []string
		err    bool
	}{
		{name: "placed only", events: []Event{placed}, status: statusPending, steps: []string{"order/placed"}},
		{name: "confirmed", events: []Event{placed, ev(2, "payment.authorized", "", at(1)),
			ev(3, "stock.reserved", "", at(2)), ev(4, "shipment.scheduled", "", at(3)), ev(5, "order.confirmed", "", at(4))},
			status: statusConfirmed, steps: []string{"order/placed", "payment/authorized", "stock/reserved", "shipment/scheduled", "order/confirmed"}},
		{name: "cancelled with its reason", events: []Event{placed, ev(2, "payment.declined", "card_declined", at(1)),
			ev(3, "order.cancelled", contracts.ReasonPaymentDeclined, at(2))},
			status: statusCancelled, reason: contracts.ReasonPaymentDeclined, steps: []string{"order/placed", "payment/declined", "order/cancelled"}},
		{name: "a final order stays final", events: []Event{placed, ev(2, "order.cancelled", contracts.ReasonTimeout, at(1)),
			ev(3, "order.confirmed", "", at(2))},
			status: statusCancelled, reason: contracts.ReasonTimeout, steps: []string{"order/placed", "order/cancelled", "order/confirmed"}},
		{name: "steps by time, not by version", events: []Event{placed, ev(2, "payment.refunded", "", at(5)),
			ev(3, "shipment.failed", "", at(3))},
			status: statusPending, steps: []string{"order/placed", "shipment/failed", "payment/refunded"}},
		{name: "equal times keep append order", events: []Event{placed, ev(2, "stock.reserved", "", at(1)),
			ev(3, "payment.authorized", "", at(1))},
			status: statusPending, steps: []string{"order/placed", "stock/reserved", "payment/authorized"}},
		{name: "no placed event first", events: []Event{ev(1, "payment.authorized", "", at(0))}, err: true},
		{name: "a gap in versions", events: []Event{placed, ev(3, "order.confirmed", "", at(1))}, err: true},
	} {
		t.Run(c.name, func(t *testing.T) {
			o, states, err := Replay("o1", c.events)
			if c.err {
				if err == nil {
					t.Fatalf("replayed %+v, want an error", o)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if o.ID != "o1" || o.UserID != "u1" || o.TotalCents != 500 || len(o.Items) != 1 || o.CreatedAt != t0 {
				t.Fatalf("order as placed lost: %+v", o)
			}
			if o.Status != c.status || o.CancelReason != c.reason {
				t.Fatalf("status %s/%q, want %s/%q", o.Status, o.CancelReason, c.status, c.reason)
			}
			if got := steps(view(o)); !reflect.DeepEqual(got, c.steps) {
				t.Fatalf("steps %v, want %v", got, c.steps)
			}
			// Each version's state is kept as it was: version 1 is the order as placed.
			if len(states) != len(c.events) || states[0].Status != statusPending || len(states[0].Steps) != 1 {
				t.Fatalf("states %+v", states)
			}
		})
	}
}

// stream reads GET /orders/{id}/events (orders' internal API: no user needed).
func (l *lab) stream(id string) StreamView {
	l.t.Helper()
	var s StreamView
	if code := l.do(http.MethodGet, "/orders/"+id+"/events", "", nil, nil, &s); code != http.StatusOK {
		l.t.Fatalf("GET /orders/%s/events: %d", id, code)
	}
	return s
}

// sameOrder fails the test unless the order rebuilt from its events is the order the
// tables hold (times compared as instants: JSON and PostgreSQL may differ in zone).
func sameOrder(t *testing.T, rebuilt, stored OrderView) {
	t.Helper()
	norm := func(o OrderView) string {
		o.CreatedAt = o.CreatedAt.UTC()
		for i := range o.Steps {
			o.Steps[i].At = o.Steps[i].At.UTC()
		}
		b, _ := json.Marshal(o)
		return string(b)
	}
	if r, s := norm(rebuilt), norm(stored); r != s {
		t.Fatalf("order rebuilt from its events differs from the stored one\nrebuilt %s\nstored  %s", r, s)
	}
}

// TestEventStore: every change is appended in its own transaction, a rolled-back change
// leaves no event, and two writers appending to one order at once collide.
func TestEventStore(t *testing.T) {
	t.Parallel()
	l := newLab(t, calm)
	user := "u-es"
	id := l.place(user, order(cardOK, "LAB-MUG", 1, "DE"), nil)
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, l.env["DATABASE_URL"])
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	st := &Store{pool: pool}
	count := func() (events, steps, last int) {
		t.Helper()
		if err := pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM order_events WHERE order_id = $1),
			(SELECT count(*) FROM order_steps WHERE order_id = $1),
			(SELECT coalesce(max(version), 0) FROM order_events WHERE order_id = $1)`, id).Scan(&events, &steps, &last); err != nil {
			t.Fatal(err)
		}
		return
	}
	e0, s0, v0 := count()
	if e0 == 0 || e0 != s0 || v0 != e0 {
		t.Fatalf("after placing: %d events (last version %d) for %d steps", e0, v0, s0)
	}
	if s := l.stream(id); s.Events[0].Type != "order.placed" || s.Version != e0 {
		t.Fatalf("stream %+v", s)
	}
	sameOrder(t, l.stream(id).State, l.get(user, id))
	// Each event carries the order as of its version (what the dashboard's event stream
	// shows when a version is picked): version 1 is the order as placed, every later
	// version one step more, and the last is the order itself.
	stream := l.stream(id)
	for i, e := range stream.Events {
		if e.Version != i+1 || len(e.State.Steps) != i+1 || e.State.OrderID != id {
			t.Fatalf("event %d: version %d, state with %d steps of order %q", i, e.Version, len(e.State.Steps), e.State.OrderID)
		}
	}
	if first := stream.Events[0].State; first.Status != statusPending || len(first.Items) != 1 {
		t.Fatalf("state at version 1: %+v, want the order as placed", first)
	}
	sameOrder(t, stream.Events[len(stream.Events)-1].State, stream.State)

	// Rolled back: neither the step nor its event.
	err = pg.InTx(ctx, pool, func(ctx context.Context) error {
		if err := st.AddStep(ctx, id, "test", "rolled_back", ""); err != nil {
			return err
		}
		return errors.New("roll back")
	})
	if e, s, _ := count(); err == nil || e != e0 || s != s0 {
		t.Fatalf("rolled-back change left %d events, %d steps (had %d, %d); err %v", e, s, e0, s0, err)
	}

	// Concurrent writers: a third transaction holds the order's row, so both appends read
	// the same last version and wait (on the foreign key); released, one commits and the
	// other fails on (order_id, version).
	hold, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := hold.Exec(ctx, `SELECT 1 FROM orders WHERE order_id = $1 FOR UPDATE`, id); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = pg.InTx(ctx, pool, func(ctx context.Context) error {
				return st.AddStep(ctx, id, "test", "concurrent", "")
			})
		}()
	}
	deadline := time.Now().Add(wait)
	for {
		var waiting int
		if err := pool.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()
			AND wait_event_type = 'Lock'`).Scan(&waiting); err != nil {
			t.Fatal(err)
		}
		if waiting >= 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("only %d writer(s) waiting", waiting)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := hold.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	conflicts := 0
	for _, err := range errs {
		if versionConflict(err) {
			conflicts++
			// The loser's message is retried, never dead-lettered: a conflict is not poison.
			if f := bus.Classify(err, versionConflict); f != bus.FailTransient {
				t.Errorf("a version conflict is classified %v, want FailTransient", f)
			}
		} else if err != nil {
			t.Fatalf("append: %v", err)
		}
	}
	e, s, v := count()
	if conflicts != 1 || e != e0+1 || s != s0+1 || v != e {
		t.Fatalf("concurrent appends: %d conflict(s), %d events (last version %d), %d steps; want 1, %d, %d, %d",
			conflicts, e, v, s, e0+1, e0+1, s0+1)
	}
	var gapless bool
	if err := pool.QueryRow(ctx, `SELECT bool_and(version = n) FROM (SELECT version,
		row_number() OVER (ORDER BY version) AS n FROM order_events WHERE order_id = $1) v`, id).Scan(&gapless); err != nil || !gapless {
		t.Fatalf("versions not gapless: %v %v", gapless, err)
	}
}

// TestProjectionRebuild: the history read model, damaged, is rebuilt from zero by
// replaying the streams: after the job it lists exactly what the write side lists, for
// confirmed, declined, compensated and pending orders alike; a second rebuild while one
// runs is refused, and the job reports its progress.
func TestProjectionRebuild(t *testing.T) {
	t.Parallel()
	l := newLab(t, map[string]string{control.SagaMode: contracts.ModeChoreography})
	user := testenv.Name("u")
	drive := func(moves ...[2]string) string {
		t.Helper()
		id := l.place(user, order(cardOK, "LAB-MUG", 1, "DE"), nil)
		checkout := placedCheckout(t, l.tap.await(t, id, 1, wait)[0]).Checkout
		for _, m := range moves {
			before := len(l.get(user, id).Steps)
			l.reply(m[0], checkout, "", m[1])
			l.waitStep(user, id, before, m[0])
		}
		return id
	}
	confirmed := drive([2]string{contracts.PaymentAuthorized}, [2]string{contracts.StockReserved}, [2]string{contracts.ShipmentScheduled})
	declined := drive([2]string{contracts.PaymentDeclined, "card_declined"})
	compensated := drive([2]string{contracts.PaymentAuthorized}, [2]string{contracts.StockRejected, contracts.ReasonOutOfStock},
		[2]string{contracts.PaymentRefunded, contracts.ReasonOutOfStock})
	pending := drive()
	for id, want := range map[string]string{confirmed: statusConfirmed, declined: statusCancelled, compensated: statusCancelled, pending: statusPending} {
		o := l.get(user, id)
		if o.Status != want {
			t.Fatalf("order %s is %s, want %s", id, o.Status, want)
		}
		sameOrder(t, l.stream(id).State, o)
	}
	l.awaitHistory(user, "limit=100") // the live read model has caught up: it is quiet now

	ctx := context.Background()
	pool, err := pgxpool.New(ctx, l.env["DATABASE_URL"])
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	// Damage the projection: a row wrong, a row gone.
	if _, err := pool.Exec(ctx, `UPDATE order_history SET status = 'pending', total_cents = 1 WHERE order_id = $1`, confirmed); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `DELETE FROM order_history WHERE order_id = $1`, compensated); err != nil {
		t.Fatal(err)
	}
	if diff := sameHistory(l.page(user, "limit=100"), l.page(user, "limit=100&view=history")); diff == "" {
		t.Fatal("the damaged read model still agrees with the write side")
	}

	// Hold the projection's table, so the job stays running while the test looks at it.
	hold, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := hold.Exec(ctx, `LOCK TABLE order_history IN ACCESS EXCLUSIVE MODE`); err != nil {
		t.Fatal(err)
	}
	var job Rebuild
	if code := l.do(http.MethodPost, "/projections/order-history/rebuild", "", nil, nil, &job); code != http.StatusAccepted ||
		job.Status != "running" || job.JobID == "" {
		t.Fatalf("POST rebuild: %d %+v", code, job)
	}
	if code := l.do(http.MethodPost, "/projections/order-history/rebuild", "", nil, nil, nil); code != http.StatusConflict {
		t.Fatalf("second POST rebuild while one runs: %d, want 409", code)
	}
	status := func() Rebuild {
		t.Helper()
		var j Rebuild
		if code := l.do(http.MethodGet, "/projections/order-history/rebuild/"+job.JobID, "", nil, nil, &j); code != http.StatusOK {
			t.Fatalf("GET rebuild: %d", code)
		}
		return j
	}
	if j := status(); j.Status != "running" || j.Done != 0 {
		t.Fatalf("held job: %+v", j)
	}
	if err := hold.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(wait)
	j := status()
	for ; j.Status == "running"; j = status() {
		if time.Now().After(deadline) {
			t.Fatalf("rebuild still running: %+v", j)
		}
		time.Sleep(30 * time.Millisecond)
	}
	var orders, rows int
	if err := pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM orders), (SELECT count(*) FROM order_history)`).Scan(&orders, &rows); err != nil {
		t.Fatal(err)
	}
	if j.Status != "completed" || j.Done != j.Total || j.Total != orders || rows != orders || j.FinishedAt == nil {
		t.Fatalf("rebuild %+v; %d orders, %d history rows", j, orders, rows)
	}
	if diff := sameHistory(l.page(user, "limit=100"), l.page(user, "limit=100&view=history")); diff != "" {
		t.Fatalf("after the rebuild: %s", diff)
	}
	if code := l.do(http.MethodGet, "/projections/order-history/rebuild/"+uuid.NewString(), "", nil, nil, nil); code != http.StatusNotFound {
		t.Fatalf("GET an unknown rebuild: %d, want 404", code)
	}
}
