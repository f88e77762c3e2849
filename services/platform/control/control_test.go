package control_test

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"microlab/services/contracts"
	"microlab/services/platform/bus"
	"microlab/services/platform/control"
	"microlab/services/platform/testenv"
)

// Route reads the side of each family, and anything it cannot read is services.
func TestRoute(t *testing.T) {
	s := control.Settings{Values: map[string]string{control.StranglerRoutes: "users=monolith,products=services,orders=monolith"}}
	for family, want := range map[string]string{"users": "monolith", "products": "services", "orders": "monolith", "nope": "services"} {
		if got := s.Route(family); got != want {
			t.Errorf("Route(%s) = %s, want %s", family, got, want)
		}
	}
	if got := control.Defaults().Route(control.FamilyOrders); got != control.RouteServices {
		t.Errorf("default route of orders = %s, want services", got)
	}
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		key, value, want, err string
	}{
		{"saga.mode", "orchestration", "orchestration", ""},
		{"saga.mode", "chaos", "", "want one of"},
		{"outbox.enabled", "FALSE", "false", ""},
		{"inbox.enabled", "maybe", "", "want true or false"},
		{"saga.step_timeout", "2s", "2s", ""},
		{"saga.step_timeout", "0s", "", "between"},
		{"gateway.cache.ttl", "30s", "30s", ""},
		{"gateway.discovery", "registry", "registry", ""},
		{"gateway.discovery", "static", "static", ""},
		{"gateway.discovery", "sideways", "", "static, registry"},
		{"deploy.catalog.weights", "v1:100", "v1:100", ""},
		{"deploy.catalog.weights", " v2:10 , v1:90 ", "v1:90,v2:10", ""},
		{"deploy.catalog.weights", "v1:0,v2:100", "v1:0,v2:100", ""},
		{"deploy.catalog.weights", "v3:10,v1:90", "", `unknown version "v3" (versions: v1, v2)`},
		{"deploy.catalog.weights", "v1:50,v2:40", "", "weights add up to 90, want 100"},
		{"deploy.catalog.weights", "v1:-10,v2:110", "", `v1: want a whole percent from 0 to 100, not "-10"`},
		{"deploy.catalog.weights", "v1:50,v1:50", "", "v1 named twice"},
		{"deploy.catalog.weights", "v1=100", "", "want version:percent pairs"},
		{"deploy.catalog.weights", "v1:12.5,v2:87.5", "", "whole percent"},
		{"deploy.catalog.weights", "", "", "want version:percent pairs"},
		{"deploy.catalog.v2", "bad", "bad", ""},
		{"deploy.catalog.v2", "v3", "", "want one of off, good, bad"},
		{"deploy.catalog.canary_max_error_rate", "0.05", "0.05", ""},
		{"deploy.catalog.canary_max_error_rate", "1.5", "", "want a number from 0 to 1"},
		{"gateway.cache.ttl", "0", "0s", ""},
		{"gateway.cache.ttl", "1h", "1h0m0s", ""},
		{"gateway.cache.ttl", "-1s", "", "between 0s and 1h0m0s"},
		{"gateway.cache.ttl", "2h", "", "between 0s and 1h0m0s"},
		{"gateway.cache.ttl", "soon", "", "between 0s and 1h0m0s"},
		{"nope", "1", "", "unknown setting"},
		{"catalog.transport", "grpc", "grpc", ""},
		{"catalog.transport", " http ", "http", ""},
		{"catalog.transport", "soap", "", "want one of http, grpc"},
		{"catalog.transport", "", "", "want one of http, grpc"},
		// strangler.routes: normalised to name every family, in order; unnamed ones
		// stay on services.
		{"strangler.routes", "orders=monolith", "users=services,products=services,orders=monolith", ""},
		{"strangler.routes", " products = monolith , users=monolith", "users=monolith,products=monolith,orders=services", ""},
		{"strangler.routes", "", "users=services,products=services,orders=services", ""},
		{"strangler.routes", "payments=monolith", "", `unknown route family "payments": want users, products, orders`},
		{"strangler.routes", "users=mainframe", "", `users="mainframe": want services or monolith`},
		{"strangler.routes", "users", "", "want family=side pairs"},
		{"strangler.routes", "users=monolith,users=services", "", "named twice"},
	} {
		got, err := control.Validate(tc.key, tc.value)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) || strings.Contains(err.Error(), "\n") {
				t.Errorf("%s=%s: want one-line error containing %q, got %v", tc.key, tc.value, tc.err, err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%s=%s: got %q, %v", tc.key, tc.value, got, err)
		}
	}
}

// A change stored and announced reaches a watching instance through the announcement
// alone (the periodic re-read, which TestResyncWithoutAnnouncement covers, is pushed out
// of the way).
//
// The watcher also re-reads the database once each time it (re)subscribes, so a change
// stored before that re-read would be applied even if announcements did nothing. Hence
// two changes: the first once the watcher's queue is bound (so its announcement is
// routed to it), which the subscription's re-read may still pick up; the second after
// the first was applied, when that one re-read is spent and only an announcement can
// make the watcher read again.
func TestSetAnnounceWatch(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	store := openStore(t, ctx)
	amqpURL := testenv.VHost(t)
	conn, err := bus.Dial(ctx, amqpURL, "control-test", log)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	changes := make(chan control.Settings, 10)
	w, err := control.NewWatcher(ctx, store, log, func(_, s control.Settings) { changes <- s })
	if err != nil {
		t.Fatal(err)
	}
	w.Resync = time.Hour // prove the announcement alone is enough
	go func() { _ = w.Run(ctx, conn) }()
	if w.Current().SagaMode() != "choreography" || !w.Current().Outbox() {
		t.Fatalf("defaults: %+v", w.Current())
	}
	// The watcher's exclusive queue is the only thing bound to lab.control in this vhost.
	testenv.AwaitQueueBinding(t, amqpURL, contracts.ExchangeControl, time.Minute)
	pub := bus.NewPublisher(conn, log)
	applied := func(what string) control.Settings {
		t.Helper()
		select {
		case s := <-changes:
			return s
		case <-time.After(time.Minute):
			t.Fatalf("announced change (%s) not applied", what)
			return control.Settings{}
		}
	}

	ch, err := store.Set(ctx, control.SagaMode, "orchestration", "test")
	if err != nil {
		t.Fatal(err)
	}
	if ch.Old != "choreography" || ch.New != "orchestration" || ch.Revision == 0 {
		t.Fatalf("change %+v", ch)
	}
	if err := control.Announce(ctx, pub, ch); err != nil {
		t.Fatal(err)
	}
	if s := applied("saga.mode"); s.SagaMode() != "orchestration" {
		t.Fatalf("applied %+v", s.Values)
	}

	ch2, err := store.Set(ctx, control.OutboxEnabled, "false", "test")
	if err != nil {
		t.Fatal(err)
	}
	if err := control.Announce(ctx, pub, ch2); err != nil {
		t.Fatal(err)
	}
	if s := applied("outbox.enabled"); s.Outbox() || s.SagaMode() != "orchestration" || s.Revision != ch2.Revision {
		t.Fatalf("applied %+v (revision %d), want outbox off at revision %d", s.Values, s.Revision, ch2.Revision)
	}
	if w.Current().Outbox() {
		t.Fatalf("current %+v", w.Current().Values)
	}

	list, err := store.List(ctx)
	if err != nil || len(list) != len(control.Defs()) {
		t.Fatalf("list: %v %v", list, err)
	}
	hist, err := store.Changes(ctx, 10)
	if err != nil || len(hist) != 2 || hist[0].Key != control.OutboxEnabled || hist[1].Key != control.SagaMode {
		t.Fatalf("history: %v %v", hist, err)
	}
	if _, err := store.Set(ctx, "saga.mode", "sideways", "test"); err == nil {
		t.Fatal("bad value accepted")
	}
}

// A change whose announcement is lost (here: never sent, and no bus at all, as in the
// gateway) still arrives with the periodic re-read.
func TestResyncWithoutAnnouncement(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	store := openStore(t, ctx)
	changes := make(chan control.Settings, 10)
	w, err := control.NewWatcher(ctx, store, log, func(_, s control.Settings) { changes <- s })
	if err != nil {
		t.Fatal(err)
	}
	w.Resync = 50 * time.Millisecond
	go func() { _ = w.Run(ctx, nil) }()
	if _, err := store.Set(ctx, control.InboxEnabled, "false", "test"); err != nil {
		t.Fatal(err)
	}
	select {
	case s := <-changes:
		if s.Inbox() {
			t.Fatalf("applied %+v", s.Values)
		}
	case <-time.After(time.Minute):
		t.Fatal("unannounced change not applied by the periodic re-read")
	}
}

// openStore opens a settings store on a lab database of the test's own, closed when the
// test ends.
func openStore(t *testing.T, ctx context.Context) *control.Store {
	t.Helper()
	store, err := control.OpenStore(ctx, testenv.DB(t, testenv.Name("t_lab_")))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(store.Close)
	return store
}

// Follow applies the settings in force at once, then again after a change made through
// the plane (stored and announced), one call at a time, and stops with its context.
func TestFollow(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	store := openStore(t, ctx)
	amqpURL := testenv.VHost(t)
	conn, err := bus.Dial(ctx, amqpURL, "control-follow-test", log)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	seen := make(chan string, 10)
	done := make(chan error, 1)
	fctx, stop := context.WithCancel(ctx)
	go func() {
		done <- control.Follow(fctx, store, conn, log, func(s control.Settings) { seen <- s.Get(control.ScaleKey("shipping")) })
	}()
	next := func() string {
		t.Helper()
		select {
		case v := <-seen:
			return v
		case <-time.After(time.Minute):
			t.Fatal("apply not called")
			return ""
		}
	}
	if v := next(); v != "1" {
		t.Fatalf("first apply saw scale.shipping=%q, want the default 1", v)
	}
	testenv.AwaitQueueBinding(t, amqpURL, contracts.ExchangeControl, time.Minute)
	plane := &control.Plane{Store: store, Pub: bus.NewPublisher(conn, log)}
	if _, err := plane.Set(ctx, control.ScaleKey("shipping"), "2", "test"); err != nil {
		t.Fatal(err)
	}
	for v := next(); v != "2"; v = next() { // a re-read may apply the old value once more
	}
	stop()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Follow: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Follow did not stop with its context")
	}
}
