package e2e

import (
	"context"
	"fmt"
	"net/http"
	"reflect"
	"testing"
	"time"

	"microlab/services/platform/control"
)

// TestEventSourcing: in the real lab (every service, RabbitMQ, PostgreSQL), each order's
// stream in orders' event store replays to the order the public API shows — confirmed,
// declined and compensated alike — and a rebuild of the history projection from zero
// replays every stream, reports its progress and leaves the read model listing what the
// write side lists. It changes read.model: a lab of its own.
func TestEventSourcing(t *testing.T) {
	t.Parallel()
	l := startLab(t, labOptions{})
	token := l.api.register(t, "sourcer")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	orders := &client{base: l.serviceURL("orders"), http: http.DefaultClient}
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
		stored, err := l.api.waitFinal(ctx, token, id)
		if err != nil {
			t.Fatal(err)
		}
		if stored.Status != o.status || stored.CancelReason != o.reason {
			t.Fatalf("order %s: %s/%q, want %s/%q", id, stored.Status, stored.CancelReason, o.status, o.reason)
		}
		// The last step may still be on its way (a late release after the outcome):
		// compare once the stream and the tables agree, or fail with both.
		var stream struct {
			Version int `json:"version"`
			Events  []struct {
				Version int    `json:"version"`
				Type    string `json:"type"`
				State   order  `json:"state"`
			} `json:"events"`
			State order `json:"state"`
		}
		deadline := time.Now().Add(30 * time.Second)
		for {
			if code, err := orders.do(ctx, http.MethodGet, "/orders/"+id+"/events", "", nil, nil, &stream); err != nil || code != http.StatusOK {
				t.Fatalf("GET /orders/%s/events: %d %v", id, code, err)
			}
			if stored, err = l.api.get(ctx, token, id); err != nil {
				t.Fatal(err)
			}
			if reflect.DeepEqual(stream.State, stored) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("order %s rebuilt from its %d events:\n%+v\nstored:\n%+v", id, stream.Version, stream.State, stored)
			}
			time.Sleep(200 * time.Millisecond)
		}
		first, last := stream.Events[0], stream.Events[len(stream.Events)-1]
		if first.Type != "order.placed" || first.State.Status != "pending" || stream.Version != len(stored.Steps) ||
			last.Version != stream.Version {
			t.Fatalf("order %s: stream %+v", id, stream)
		}
	}

	var job struct {
		JobID  string `json:"jobId"`
		Status string `json:"status"`
		Done   int    `json:"done"`
		Total  int    `json:"total"`
	}
	if code, err := orders.do(ctx, http.MethodPost, "/projections/order-history/rebuild", "", nil, nil, &job); err != nil || code != http.StatusAccepted {
		t.Fatalf("POST rebuild: %d %v", code, err)
	}
	for job.Status == "running" {
		if ctx.Err() != nil {
			t.Fatalf("rebuild still running: %+v", job)
		}
		time.Sleep(100 * time.Millisecond)
		if code, err := orders.do(ctx, http.MethodGet, "/projections/order-history/rebuild/"+job.JobID, "", nil, nil, &job); err != nil || code != http.StatusOK {
			t.Fatalf("GET rebuild: %d %v", code, err)
		}
	}
	if job.Status != "completed" || job.Total < len(outcomes) || job.Done != job.Total {
		t.Fatalf("rebuild ended %+v, want completed with every stream (at least %d)", job, len(outcomes))
	}
	composed, err := history(ctx, l, token)
	if err != nil {
		t.Fatal(err)
	}
	l.set(control.ReadModel, control.ReadModelCQRS)
	rebuilt, err := history(ctx, l, token)
	if err != nil {
		t.Fatal(err)
	}
	l.set(control.ReadModel, control.ReadModelComposition)
	if !reflect.DeepEqual(rebuilt, composed) || len(composed.list) != len(outcomes) {
		t.Fatal(fmt.Sprintf("after the rebuild the read model lists\n%v\nthe write side\n%v", rebuilt, composed))
	}
}
