package main

import (
	"context"
	"errors"
	"slices"
	"strings"
	"time"

	"microlab/dashboard/views"
	"microlab/services/platform/control"
)

// Thresholds for the map's colours. Red matches the HTTPHighErrorRate alert (5% 5xx);
// amber is an early warning.
const (
	badErrorPct  = 5.0
	warnErrorPct = 1.0
	warnP95Ms    = 1000.0
)

// pollHealth refreshes the map's health every interval: request and message rates,
// error % and p95 per service from Prometheus' recording rules, queue depths from RabbitMQ's management
// API (so depths show even without Prometheus), and broadcasts it as "health".
func (s *server) pollHealth(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		h := s.readHealth(ctx)
		s.health.Store(&h)
		broadcast(s.src.Hub, "health", h)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (s *server) readHealth(ctx context.Context) views.Health {
	ctx, cancel := context.WithTimeout(ctx, 4*time.Second)
	defer cancel()
	h := views.Health{Services: map[string]views.ServiceHealth{}, Queues: map[string]int{}}
	perJob := func(expr string, set func(*views.ServiceHealth, float64)) error {
		res, err := s.prom.instant(ctx, expr)
		for _, r := range res {
			job := r.Metric["job"]
			if _, v, ok := sampleValue(r.Value); ok && job != "" {
				sh := h.Services[job]
				set(&sh, v)
				h.Services[job] = sh
			}
		}
		return err
	}
	var errs []error
	errs = append(errs,
		perJob("job:up:ratio", func(sh *views.ServiceHealth, v float64) { sh.Up = v >= 1; sh.State = "scraped" }),
		perJob("job:http_server_requests:rate1m", func(sh *views.ServiceHealth, v float64) { sh.Rate = v }),
		perJob("job:messaging_handled:rate1m", func(sh *views.ServiceHealth, v float64) { sh.MsgRate, sh.Consumes = v, true }),
		perJob("100 * job:http_server_requests_5xx:ratio_rate1m", func(sh *views.ServiceHealth, v float64) { sh.ErrorPct = v }),
		perJob("1000 * job:http_server_request_duration_seconds:p95_1m", func(sh *views.ServiceHealth, v float64) { sh.P95Ms = v }),
		perJob("count by (job) (up)", func(sh *views.ServiceHealth, v float64) { sh.Instances = int(v) }),
		perJob("sum by (job) (up)", func(sh *views.ServiceHealth, v float64) { sh.Answering = int(v) }),
	)
	errs = append(errs, s.readPatternLive(ctx, &h.Patterns))
	for name, sh := range h.Services {
		sh.State = stateOf(sh)
		h.Services[name] = sh
	}
	if err := errors.Join(errs...); errors.Is(err, errUnreachable) {
		h.Error = "Service health unknown: " + views.UnreachableMessage(s.promShown())
	}
	if s.rabbit != nil {
		if qs, err := s.rabbit.queues(ctx); err == nil {
			for _, q := range qs {
				h.Queues[q.Name] = q.Ready
			}
		}
		if names, err := s.rabbit.connectionNames(ctx); err == nil {
			h.Instances = instancesOf(names, control.FaultServices)
		}
	}
	return h
}

// instancesOf reads instance names out of the broker's connection names: an instance
// names its connections "<instance>/<what for>" (a service that consumes dials twice,
// "payments-2/consume" and "payments-2/publish"), and an instance of payments is named
// "payments-<something>" (payments-2 under lab up; control refuses any other name for
// one). Anything else connected (the dashboard, the CLI, a test) is no instance of a
// service. The map is never nil: the broker answered, and a service it does not list has
// no instance connected.
func instancesOf(connections, services []string) map[string][]string {
	out := map[string][]string{}
	for _, c := range connections {
		id := c
		if i := strings.LastIndexByte(c, '/'); i >= 0 {
			id = c[:i]
		}
		for _, svc := range services {
			if strings.HasPrefix(id, svc+"-") && len(id) > len(svc)+1 && !slices.Contains(out[svc], id) {
				out[svc] = append(out[svc], id)
			}
		}
	}
	for _, ids := range out {
		slices.Sort(ids)
	}
	return out
}

func stateOf(sh views.ServiceHealth) string {
	switch {
	case !sh.Up || sh.ErrorPct > badErrorPct:
		return "bad"
	case sh.ErrorPct > warnErrorPct || sh.P95Ms > warnP95Ms:
		return "warn"
	}
	return "ok"
}

// Queries of the pattern strip's numbers (docs/observability.md names the metrics).
const (
	cacheHitRatioExpr = `sum(rate(gateway_cache_requests_total{result="hit"}[1m])) / sum(rate(gateway_cache_requests_total[1m]))`
	healthyUpstreams  = `sum by (upstream) (gateway_upstream_instances{state="healthy"})`
)

// readPatternLive reads the gateway cache's hit ratio and the healthy instances per
// upstream behind the registry. No series is no number: the strip then says less, it
// never shows a 0 it did not measure.
func (s *server) readPatternLive(ctx context.Context, p *views.PatternLive) error {
	res, err := s.prom.instant(ctx, cacheHitRatioExpr)
	for _, r := range res {
		if _, v, ok := sampleValue(r.Value); ok {
			p.CacheHitRatio = &v
		}
	}
	res, err2 := s.prom.instant(ctx, healthyUpstreams)
	for _, r := range res {
		if _, v, ok := sampleValue(r.Value); ok && r.Metric["upstream"] != "" {
			if p.Healthy == nil {
				p.Healthy = map[string]int{}
			}
			p.Healthy[r.Metric["upstream"]] = int(v)
		}
	}
	return errors.Join(err, err2)
}
