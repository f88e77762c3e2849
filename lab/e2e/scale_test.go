package e2e

import (
	"context"
	"fmt"
	"maps"
	"net/http"
	"strings"
	"testing"
	"time"

	"microlab/lab/scaling"
	"microlab/lab/stack"
	"microlab/services/platform/bus"
	"microlab/services/platform/control"
)

// Scaling out while the lab runs, as `lab up` does it (lab/scaling following the
// scale.<service> settings): scale.shipping=2 starts shipping-2, which becomes healthy,
// subscribes to shipping.events beside shipping-1, is scraped by Prometheus (its targets
// rewritten) and takes its share of the messages; scale.shipping=1 stops it while it
// holds messages (a latency fault keeps every handler busy), and every order still ends
// as meant: what it held went back to the queue and shipping-1 handled it.
func TestScaleFollow(t *testing.T) {
	t.Parallel()
	l := startLab(t, labOptions{scaleUpTo: 2})
	prom := startPrometheus(t, l)
	plane := l.faultPlane(t)
	tokens := users(t, l, 4)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	set := func(v string) {
		t.Helper()
		if _, err := plane.Set(ctx, control.ScaleKey("shipping"), v, "e2e"); err != nil {
			t.Fatalf("scale.shipping=%s: %v", v, err)
		}
	}
	second := instanceURL(t, l, "shipping-2")
	scraped := func(n int) func() bool {
		return func() bool {
			res, err := promQuery(ctx, prom, `count(up{job="shipping"} == 1)`)
			return err == nil && len(res) == 1 && fmt.Sprint(res[0].Value[1]) == fmt.Sprint(n)
		}
	}
	confirmed := func(n int) []checkout {
		out := make([]checkout, n)
		for i := range out {
			out[i] = checkout{newOrder(cardOK, skuOK, "DE"), "confirmed", ""}
		}
		return out
	}
	var all placedBatch
	place := func(n int) {
		t.Helper()
		b := confirmed(n)
		ids := placeBatch(t, l, b, 4, tokens)
		for i := range ids {
			all.batch, all.ids, all.tokens = append(all.batch, b[i]), append(all.ids, ids[i]), append(all.tokens, tokens[i%len(tokens)])
		}
	}

	// Out: a second instance, healthy, subscribed, scraped, consuming.
	start := time.Now()
	set("2")
	waitFor(t, 2*time.Minute, "shipping-2 answering /readyz", func() bool { return ready(second) })
	waitFor(t, time.Minute, "two consumers on shipping.events", func() bool { return l.consumers(t, "shipping.events") == 2 })
	t.Logf("shipping-2 healthy and consuming %s after scale.shipping=2", time.Since(start).Round(time.Millisecond))
	if got := l.scaler.Instances("shipping"); got != 2 {
		t.Fatalf("the scaler runs %d instances of shipping, want 2", got)
	}
	waitFor(t, time.Minute, "Prometheus scraping both shipping instances", scraped(2))
	waitFor(t, 3*time.Minute, "shipping-2 handling messages", func() bool {
		place(8)
		return handled(second) > 0
	})
	t.Logf("shipping-2 handled %v messages, shipping-1 %v", handled(second), handled(l.serviceURL("shipping")))

	// In, while shipping-2 holds messages: none is lost.
	addFault(t, plane, control.FaultSpec{Service: "shipping", Kind: control.FaultLatency, Value: "1s", On: control.OnMessages, For: "10m"})
	placed := len(all.ids)
	place(40) // accepted: their messages reach shipping from now on, a second each

	waitFor(t, time.Minute, "shipping-2 busy with messages", func() bool { return inFlight(second) > 0 })
	held := inFlight(second)
	set("1")
	waitFor(t, time.Minute, "shipping-2 stopped", func() bool { return l.sup.PID("shipping-2") == 0 && !ready(second) })
	t.Logf("shipping-2 stopped while it handled %v messages; %d orders placed under the fault", held, len(all.ids)-placed)
	waitFor(t, time.Minute, "one consumer on shipping.events", func() bool { return l.consumers(t, "shipping.events") == 1 })
	waitFor(t, time.Minute, "Prometheus scraping one shipping instance", scraped(1))
	clearFaults(t, plane)
	awaitBatch(t, l, all.batch, all.ids, all.tokens, 4*time.Minute)
	if got := l.scaler.Instances("shipping"); got != 1 {
		t.Errorf("the scaler runs %d instances of shipping, want 1", got)
	}
	t.Logf("%d orders, every one as meant, across scale 1 → 2 → 1", len(all.ids))
}

// followScale runs lab up's scale follower (lab/scaling) on this lab's supervisor until
// the test ends; it rewrites the targets of the lab's Prometheus, once started.
func (l *lab) followScale(t testing.TB, bins string) {
	t.Helper()
	l.scaler = scaling.New(l.cfg, l.sup, bins, l.scale)
	l.scaler.Targets = func(scale map[string]int) error {
		p := l.prom.Load()
		if p == nil {
			return nil
		}
		groups, err := l.cfg.Targets(scale)
		if err != nil {
			return err
		}
		return p.WriteTargets(groups)
	}
	l.scaler.Progress = func(step string) { fmt.Fprintln(l.logs, "lab:", step) }
	ctx, cancel := context.WithCancel(context.Background())
	dctx, dcancel := context.WithTimeout(ctx, time.Minute)
	defer dcancel()
	conn, err := bus.Dial(dctx, l.cfg.AMQPURL, "e2e-scale", discard())
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		done <- scaling.Follow(ctx, l.scaler, l.store, conn, bus.NewPublisher(conn, discard()), discard())
	}()
	t.Cleanup(func() { // before the services stop (registered after startLab's)
		cancel()
		if err := <-done; err != nil {
			t.Errorf("follow scale: %v", err)
		}
		conn.Close()
	})
}

// claimScale is the scale whose ports a lab claims: its own, and with scaleUpTo that many
// instances of every service with a scale setting.
func claimScale(opts labOptions) map[string]int {
	if opts.scaleUpTo <= 0 {
		return opts.scale
	}
	out := maps.Clone(opts.scale)
	if out == nil {
		out = map[string]int{}
	}
	for _, svc := range control.ScaleServices {
		out[svc] = max(out[svc], opts.scaleUpTo)
	}
	out[stack.CatalogV2] = 1 // deploy.catalog.v2 may start it
	return out
}

// instanceURL is the base URL of an instance of this lab (started or not).
func instanceURL(t testing.TB, l *lab, id string) string {
	t.Helper()
	svc, _, _ := strings.Cut(id, "-")
	insts, err := l.cfg.Instances(map[string]int{svc: stack.MaxScale})
	if err != nil {
		t.Fatal(err)
	}
	for _, in := range insts {
		if in.ID == id {
			return in.URL()
		}
	}
	t.Fatalf("no instance %s", id)
	return ""
}

func ready(base string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/readyz", nil)
	if err != nil {
		return false
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// handled is how many shipping.events messages an instance has handled; inFlight how
// many it is handling now (0 when it does not answer).
func handled(base string) float64 {
	return sample(base, "messaging_handle_duration_seconds_count", `queue="shipping.events"`)
}

func inFlight(base string) float64 {
	return sample(base, "messaging_in_flight", `queue="shipping.events"`)
}

func sample(base, name, label string) float64 {
	body, err := metricsOf(base)
	if err != nil {
		return 0
	}
	sum := 0.0
	for _, line := range strings.Split(body, "\n") {
		if !strings.HasPrefix(line, name+"{") || !strings.Contains(line, label) {
			continue
		}
		var v float64
		if _, err := fmt.Sscan(line[strings.LastIndex(line, " ")+1:], &v); err == nil {
			sum += v
		}
	}
	return sum
}
