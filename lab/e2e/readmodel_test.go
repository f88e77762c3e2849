package e2e

import (
	"context"
	"fmt"
	"reflect"
	"testing"
	"time"

	"microlab/services/platform/control"
)

// TestReadModel: read.model switches the order history (GET /api/v1/orders, /home)
// between composition (orders' write side) and cqrs (the read model orders keeps from
// events). Once the read model has caught up, a customer sees the same orders, with the
// same fields, either way; its lag is exported. It changes a setting: a lab of its own.
func TestReadModel(t *testing.T) {
	t.Parallel()
	l := startLab(t, labOptions{})
	token := l.api.register(t, "reader")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	outcomes := []struct{ card, sku, country, status, reason string }{
		{cardOK, skuOK, "DE", "confirmed", ""},
		{cardDeclined, skuOK, "DE", "cancelled", "payment_declined"},
		{cardOK, skuOOS, "DE", "cancelled", "out_of_stock"},
		{cardOK, skuOK, "XX", "cancelled", "shipping_failed"},
	}
	for _, o := range outcomes {
		id, err := placeOne(l, token, newOrder(o.card, o.sku, o.country))
		if err != nil {
			t.Fatal(err)
		}
		got, err := l.api.waitFinal(ctx, token, id)
		if err != nil {
			t.Fatal(err)
		}
		if got.Status != o.status || got.CancelReason != o.reason {
			t.Fatalf("order %s: %s/%q, want %s/%q", id, got.Status, got.CancelReason, o.status, o.reason)
		}
	}

	if l.setting(control.ReadModel) != control.ReadModelComposition {
		t.Fatalf("read.model defaults to %q", l.setting(control.ReadModel))
	}
	composed, err := history(ctx, l, token)
	if err != nil {
		t.Fatal(err)
	}
	if len(composed.list) != len(outcomes) || len(composed.home) != len(outcomes) {
		t.Fatalf("composition lists %d orders and /home %d, want %d each", len(composed.list), len(composed.home), len(outcomes))
	}

	l.set(control.ReadModel, control.ReadModelCQRS)
	// The read model lags behind the write side by the trip of order.confirmed and
	// order.cancelled through the outbox and the broker: wait until it has caught up.
	var last orderHistory
	for !reflect.DeepEqual(last, composed) {
		if ctx.Err() != nil {
			t.Fatalf("the read model never caught up:\ncomposition %v\ncqrs        %v", composed, last)
		}
		if last, err = history(ctx, l, token); err != nil {
			t.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// Every order.placed, .confirmed and .cancelled it applied was measured.
	if n := l.metric(t, "orders", "read_model_apply_lag_seconds_count"); n < float64(2*len(outcomes)) {
		t.Fatalf("read_model_apply_lag_seconds_count = %v, want at least %d", n, 2*len(outcomes))
	}

	l.set(control.ReadModel, control.ReadModelComposition)
	back, err := history(ctx, l, token)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back, composed) {
		t.Fatalf("back to composition:\n%v\nwant\n%v", back, composed)
	}
}

// orderHistory is what a customer sees of their history: GET /api/v1/orders and
// /home's recent orders, every field but the step log (the read model's items carry
// steps [], the write side's its log: GET /api/v1/orders/{id} tells that in both modes).
type orderHistory struct {
	list, home []map[string]any
}

func history(ctx context.Context, l *lab, token string) (orderHistory, error) {
	var page struct {
		Items []map[string]any `json:"items"`
	}
	if _, err := l.api.do(ctx, "GET", "/api/v1/orders?limit=100", token, nil, nil, &page); err != nil {
		return orderHistory{}, err
	}
	var home struct {
		Orders   []map[string]any `json:"orders"`
		Degraded []string         `json:"degraded"`
	}
	if _, err := l.api.do(ctx, "GET", "/api/v1/home", token, nil, nil, &home); err != nil {
		return orderHistory{}, err
	}
	if len(home.Degraded) != 0 {
		return orderHistory{}, fmt.Errorf("home degraded: %v", home.Degraded)
	}
	for _, list := range [][]map[string]any{page.Items, home.Orders} {
		for _, o := range list {
			if _, ok := o["steps"]; ok { // a list carries summaries, in either read model
				return orderHistory{}, fmt.Errorf("a listed order carries steps: %v", o)
			}
		}
	}
	return orderHistory{list: page.Items, home: home.Orders}, nil
}
