package e2e

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"microlab/lab/loadgen"
	"microlab/services/platform/control"
)

// TestStranglerMigration walks the strangler fig in a real lab, with traffic on the
// whole time: the lab starts with every route family on the monolith, each family is
// moved to the services one at a time, then back one at a time. No request may fail
// (every placement accepted, every browse and poll answered, every order ending as its
// outcome says), every order placed is readable through the gateway at the end and is
// final, and one checkout trace from each side shows the shape of each: on the monolith
// one process (spans of service monolith, SQL inside, no messaging span), on the
// services the saga across orders, payments, inventory, shipping and notifications.
func TestStranglerMigration(t *testing.T) {
	t.Parallel()
	allMonolith := "users=monolith,products=monolith,orders=monolith"
	l := startLab(t, labOptions{tracing: true, settings: map[string]string{control.StranglerRoutes: allMonolith}})
	gw := l.serviceURL("gateway")

	// The shopper registers while users is on the monolith: its account lives there only.
	email := "strangler-" + strings.ReplaceAll(l.cfg.DBPrefix, "_", "") + "@example.com"
	if code, err := l.api.do(context.Background(), "POST", "/api/v1/users", "", map[string]string{
		"email": email, "name": "Fig", "password": "fig-secret-1"}, nil, nil); err != nil || code != 201 {
		t.Fatalf("register on the monolith: %d %v", code, err)
	}

	moves := []string{
		"users=monolith,products=services,orders=monolith",
		"users=services,products=services,orders=monolith",
		"users=services,products=services,orders=services",
		"users=services,products=services,orders=monolith",
		"users=monolith,products=services,orders=monolith",
		allMonolith,
	}
	const step = 8 * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var (
		wg      sync.WaitGroup
		sum     loadgen.Summary
		loadErr error
	)
	wg.Go(func() {
		sum, loadErr = loadgen.Run(ctx, loadgen.Config{Gateway: gw, Rate: 2, Duration: step * time.Duration(len(moves)+1),
			Accounts: []loadgen.Account{{Email: email, Password: "fig-secret-1"}}, Browse: 1, Prefix: "fig"})
	})
	time.Sleep(step)
	for _, routes := range moves {
		l.set(control.StranglerRoutes, routes)
		t.Logf("strangler.routes=%s", routes)
		time.Sleep(step)
	}
	wg.Wait()
	if loadErr != nil {
		t.Fatal(loadErr)
	}
	t.Logf("traffic: %d placed, %d browses, %d polls", sum.Placed, sum.Browses, sum.Polls)
	if !sum.KeptUp() || sum.BrowseErrs != 0 || sum.PollErrs != 0 || sum.Placed < 40 {
		t.Fatalf("requests failed during the migration: %+v", sum.Progress)
	}
	for _, e := range sum.Ends {
		if e.Expected != e.Placed || len(e.Got) != 0 {
			t.Errorf("outcome %s: %d placed, %d ended as expected, otherwise %v", e.Outcome, e.Placed, e.Expected, e.Got)
		}
	}

	// Every order is still readable through the gateway, whichever side placed it, and
	// final. Orders (and users) are on the monolith now: the services' orders are found
	// by the facade's fallback.
	token := l.api.login(t, email, "fig-secret-1")
	var onMonolith, onServices loadgen.Placed
	for _, p := range sum.Orders {
		o, err := l.api.get(ctx, token, p.ID)
		if err != nil {
			t.Fatalf("order %s (placed %s) not readable at the end: %v", p.ID, p.PlacedAt.Format(time.TimeOnly), err)
		}
		if o.Status != "confirmed" && o.Status != "cancelled" {
			t.Fatalf("order %s is %s at the end", p.ID, o.Status)
		}
		if p.Outcome == loadgen.OK && p.TraceID != "" {
			if o.SagaMode == "monolith" {
				onMonolith = p
			} else {
				onServices = p
			}
		}
	}
	if onMonolith.ID == "" || onServices.ID == "" {
		t.Fatalf("want a confirmed order from each side; monolith %q, services %q", onMonolith.ID, onServices.ID)
	}

	// The monolith's checkout: one process, no broker hop.
	tr := awaitTrace(t, l.jaeger, onMonolith.TraceID, func(tr *jaegerTrace) bool {
		return hasServices([]string{"gateway", "monolith"})(tr) && len(tr.find("monolith", "schedule shipment")) > 0
	})
	for _, s := range tr.Spans {
		if op := s.OperationName; strings.HasPrefix(op, "publish ") || strings.HasPrefix(op, "process ") {
			t.Errorf("the monolith's checkout has a messaging span %q (%s)", op, tr.service(s))
		}
		if svc := tr.service(s); svc != "gateway" && svc != "monolith" {
			t.Errorf("the monolith's checkout has a span of %s: %s", svc, s.OperationName)
		}
	}
	if !hasSQL(tr, "monolith") {
		t.Errorf("no SQL span of the monolith in %s", describe(tr))
	}
	if !gatewayRoute(tr, "orders=monolith") {
		t.Errorf("the gateway span has no strangler.route=orders=monolith in %s", describe(tr))
	}
	if !calledUpstream(tr, "monolith") || calledUpstream(tr, "orders") {
		t.Errorf("the gateway's upstream span does not name the monolith (peer.service) in %s", describe(tr))
	}

	// The services' checkout: the saga across five services and the broker.
	tr = awaitTrace(t, l.jaeger, onServices.TraceID, func(tr *jaegerTrace) bool {
		return hasServices(sixServices)(tr) && parentsArrived(tr)
	})
	if !hasServices(sixServices)(tr) {
		t.Fatalf("the services' checkout has spans from %v, want %v", tr.services(), sixServices)
	}
	if len(tr.find("monolith", "")) != 0 {
		t.Errorf("the services' checkout has monolith spans: %s", describe(tr))
	}
	published := false
	for _, s := range tr.Spans {
		published = published || strings.HasPrefix(s.OperationName, "publish ")
	}
	if !published {
		t.Errorf("no publish span in the services' checkout: %s", describe(tr))
	}
	if !gatewayRoute(tr, "orders=services") {
		t.Errorf("the gateway span has no strangler.route=orders=services in %s", describe(tr))
	}
	if !calledUpstream(tr, "orders") || calledUpstream(tr, "monolith") {
		t.Errorf("the gateway's upstream span does not name orders (peer.service) in %s", describe(tr))
	}
}

// calledUpstream reports a gateway client span to the upstream called name.
func calledUpstream(tr *jaegerTrace, name string) bool {
	for _, s := range tr.find("gateway", "POST /orders") {
		if s.tag("peer.service") == name {
			return true
		}
	}
	return false
}

// hasSQL reports an SQL span (otelpgx's) of service.
func hasSQL(tr *jaegerTrace, service string) bool {
	for _, s := range tr.find(service, "") {
		if s.tag("db.system") == "postgresql" || s.tag("db.system.name") == "postgresql" {
			return true
		}
	}
	return false
}

// gatewayRoute reports a gateway span whose strangler.route names route.
func gatewayRoute(tr *jaegerTrace, route string) bool {
	for _, s := range tr.find("gateway", "") {
		if strings.Contains(s.tag("strangler.route"), route) {
			return true
		}
	}
	return false
}
