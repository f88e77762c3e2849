package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"microlab/dashboard/views"
	"microlab/observability"
	"microlab/services/platform/config"
)

// promClient reads Prometheus' HTTP API (/api/v1/query, /api/v1/query_range).
type promClient struct {
	base string
	http *http.Client
}

// errUnreachable: Prometheus did not answer (or something else answered: a proxy's
// error page is no answer either). Pages say so rather than draw empty charts.
var errUnreachable = errors.New("prometheus unreachable")

type promSeries struct {
	Metric map[string]string `json:"metric"`
	Value  [2]any            `json:"value"`  // instant
	Values [][2]any          `json:"values"` // range
}

func (p *promClient) get(ctx context.Context, path string, q url.Values) ([]promSeries, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(p.base, "/")+path+"?"+q.Encode(), nil)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errUnreachable, err)
	}
	resp, err := p.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errUnreachable, err)
	}
	defer resp.Body.Close()
	var body struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			Result []promSeries `json:"result"`
		} `json:"data"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 16<<20)).Decode(&body); err != nil || body.Status == "" {
		return nil, fmt.Errorf("%w: HTTP %d, not Prometheus' API", errUnreachable, resp.StatusCode)
	}
	if body.Status != "success" {
		return nil, fmt.Errorf("query failed: %s", body.Error)
	}
	return body.Data.Result, nil
}

// instant evaluates expr now: one value per series, keyed by the series' labels.
func (p *promClient) instant(ctx context.Context, expr string) ([]promSeries, error) {
	return p.get(ctx, "/api/v1/query", url.Values{"query": {expr}})
}

// rangeQuery evaluates expr over [now-window, now].
func (p *promClient) rangeQuery(ctx context.Context, expr string, window, step time.Duration) ([]promSeries, error) {
	end := time.Now()
	return p.get(ctx, "/api/v1/query_range", url.Values{"query": {expr},
		"start": {strconv.FormatInt(end.Add(-window).Unix(), 10)}, "end": {strconv.FormatInt(end.Unix(), 10)},
		"step": {strconv.Itoa(int(step.Seconds()))}})
}

func sampleValue(v [2]any) (time.Time, float64, bool) {
	ts, ok1 := v[0].(float64)
	s, ok2 := v[1].(string)
	if !ok1 || !ok2 {
		return time.Time{}, 0, false
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || f != f { // NaN: a ratio over no traffic
		return time.Time{}, 0, false
	}
	return time.Unix(0, int64(ts*1e9)), f, true
}

// panelDef is one chart of the metrics page: a query (a recording rule where one
// fits) and the Grafana panel that shows the same thing.
type panelDef struct {
	id, title, expr, unit string
	labels                []string // the series' label values shown, in this order
	dashboard, panel      string   // Grafana dashboard uid and panel title
}

var panelDefs = []panelDef{
	{"throughput", "Throughput (requests/s per service)", "job:http_server_requests:rate1m", "/s", []string{"job"},
		"microlab-shop-overview", "Request rate by service"},
	{"latency", "p95 latency per service", "1000 * job:http_server_request_duration_seconds:p95_1m", "ms", []string{"job"},
		"microlab-shop-overview", "p95 latency by service"},
	{"errors", "Error % per service (5xx)", "100 * job:http_server_requests_5xx:ratio_rate1m", "%", []string{"job"},
		"microlab-shop-overview", "Error % by service (5xx)"},
	{"sagas", "Saga outcomes by mode (ended/s)", "mode_outcome:saga_completed:rate5m", "/s", []string{"mode", "outcome"},
		"microlab-checkout-saga", "Sagas ended by mode and outcome"},
	{"compensations", "Compensations by mode and reason (/s)", "mode_reason:saga_compensated:rate5m", "/s", []string{"mode", "reason"},
		"microlab-checkout-saga", "Compensations by reason"},
	{"queues", "Queue depth (ready messages)", `sum by (queue) (rabbitmq_queue_messages_ready{queue!~".*\\.dlq"})`, "", []string{"queue"},
		"microlab-messaging", "Queue depth (ready)"},
	{"dlq", "Dead-letter queues (messages)", "vhost_queue:rabbitmq_dlq_messages:max", "", []string{"queue"},
		"microlab-messaging", "DLQ depth"},
}

// grafanaLinks resolves each panel's Grafana link (a path: /d/<uid>?viewPanel=<id>)
// from the embedded dashboards.
func grafanaLinks(defs []panelDef) (map[string]string, error) {
	qs, err := observability.PanelQueries(observability.Assets())
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, d := range defs {
		i := slices.IndexFunc(qs, func(q observability.PanelQuery) bool { return q.Dashboard == d.dashboard && q.Panel == d.panel })
		if i < 0 {
			return nil, fmt.Errorf("metrics panel %s: no Grafana panel %q in dashboard %s", d.id, d.panel, d.dashboard)
		}
		out[d.id] = fmt.Sprintf("/d/%s?viewPanel=%d", url.PathEscape(d.dashboard), qs[i].PanelID)
	}
	return out, nil
}

// metricsModel queries every panel (in parallel, bounded by a few seconds).
func (s *server) metricsModel(ctx context.Context) views.MetricsModel {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	grafana := s.grafana.state()
	m := views.MetricsModel{Prometheus: config.MaskURL(s.cfg.PrometheusURL), Panels: make([]views.Panel, len(s.panels)), Grafana: grafana}
	links, _ := grafanaLinks(s.panels) // checked at start
	var wg sync.WaitGroup
	var mu sync.Mutex
	for i, d := range s.panels {
		wg.Go(func() {
			p := views.Panel{ID: d.id, Title: d.title, Query: d.expr, Unit: d.unit, Grafana: grafana.Link(links[d.id])}
			res, err := s.prom.rangeQuery(ctx, d.expr, 15*time.Minute, 15*time.Second)
			if errors.Is(err, errUnreachable) {
				mu.Lock()
				m.Unreachable = true
				mu.Unlock()
			} else if err != nil {
				p.Error = err.Error()
			}
			for _, r := range res {
				var sr views.Series
				var parts []string
				for _, l := range d.labels {
					if v := r.Metric[l]; v != "" {
						parts = append(parts, v)
					}
				}
				sr.Label = strings.Join(parts, " ")
				for _, v := range r.Values {
					if t, f, ok := sampleValue(v); ok {
						sr.Points = append(sr.Points, views.Point{T: t, V: f})
					}
				}
				if len(sr.Points) > 0 {
					p.Series = append(p.Series, sr)
				}
			}
			slices.SortFunc(p.Series, func(a, b views.Series) int { return strings.Compare(a.Label, b.Label) })
			m.Panels[i] = p
		})
	}
	wg.Wait()
	return m
}

// promShown is Prometheus' URL as pages show it (password masked).
func (s *server) promShown() string { return config.MaskURL(s.cfg.PrometheusURL) }
