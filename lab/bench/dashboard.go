package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"microlab/lab/loadgen"
	"microlab/lab/stack"
)

// dashboard measures the span-to-browser delay: one browser's websocket on the
// dashboard while lab/loadgen places orders; for each accepted order, the time from the
// gateway's 202 (its root span has ended) to the first "traces" message listing that
// trace with the gateway's span as its root (other services' spans of the trace often
// arrive earlier: they end earlier).
func (b *bench) dashboard(ctx context.Context) error {
	p := b.p
	d, _ := stack.Find(stack.Dashboard)
	dash := b.l.cfg.URL(d)
	if b.l.sampling == "0" {
		b.note("the dashboard delay needs traces: not measured with sampling off")
		return nil
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	ws, resp, err := websocket.DefaultDialer.DialContext(wctx, strings.Replace(dash, "http", "ws", 1)+"/ws", http.Header{"Origin": {dash}})
	cancel()
	if err != nil {
		if resp != nil {
			err = fmt.Errorf("%w (%s)", err, resp.Status)
		}
		b.note("the dashboard's websocket: %v: its delay is not measured", err)
		return nil
	}
	defer ws.Close()
	seen := WatchTraces(ws)
	gw, _ := stack.Find("gateway")
	if _, ok := b.l.settle(ctx, p.quietWithin, p.quietExtra, func(m string) { b.say("%s", m) }); !ok {
		b.note("before the dashboard run the lab still had sagas under way")
	}
	last := time.Time{}
	b.say("%g/s for %s with one browser's websocket open", p.dashRate, p.dashboard)
	s, err := loadgen.Run(ctx, loadgen.Config{Gateway: b.l.cfg.URL(gw), Rate: p.dashRate, Duration: p.dashboard, Mix: b.o.Mix,
		Shoppers: p.shoppers, Browse: b.o.Browse, Follow: p.fixedFollow, Prefix: "bench",
		Progress: func(pr loadgen.Progress) {
			if pr.Phase != "preparing" && (pr.Done || time.Since(last) >= p.progressEvery) {
				last = time.Now()
				b.say("%s", pr.Line())
			}
		}})
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("dashboard run: %w", err)
	}
	if err := sleep(ctx, 3*time.Second); err != nil { // the last batches of spans
		return err
	}
	var delays []time.Duration
	traces := 0
	for _, o := range s.Orders {
		if o.TraceID == "" {
			continue
		}
		traces++
		if at, ok := seen.At(o.TraceID); ok {
			delays = append(delays, max(at.Sub(o.PlacedAt), 0))
		}
	}
	slices.Sort(delays)
	out := &Dashboard{Rate: p.dashRate, Seconds: p.dashboard.Seconds(), Clients: 1, Traces: traces, Seen: len(delays)}
	if len(delays) > 0 {
		out.Delay = Latency{N: len(delays), P50: pctMs(delays, .50), P95: pctMs(delays, .95), P99: pctMs(delays, .99), Max: msOf(delays[len(delays)-1])}
	} else {
		b.note("no trace of %d checkouts reached the dashboard's websocket", traces)
	}
	b.say("span to browser: p50 %.0f ms, p95 %.0f ms (%d of %d traces seen)", out.Delay.P50, out.Delay.P95, out.Seen, out.Traces)
	b.r.Dashboard = out
	return nil
}

// TraceWatch is what one browser's websocket on the dashboard has shown: when each
// trace first appeared in a "traces" message with the gateway's span as its root.
type TraceWatch struct {
	mu   sync.Mutex
	seen map[string]time.Time
}

// WatchTraces reads ws until it closes, noting traces as they appear (the page's own
// reading: a "traces" message is a list of trace summaries).
func WatchTraces(ws *websocket.Conn) *TraceWatch {
	w := &TraceWatch{seen: map[string]time.Time{}}
	go func() {
		for {
			_, data, err := ws.ReadMessage()
			if err != nil {
				return
			}
			now := time.Now()
			var m struct {
				Type string          `json:"type"`
				Data json.RawMessage `json:"data"`
			}
			if json.Unmarshal(data, &m) != nil || m.Type != "traces" {
				continue
			}
			var list []struct {
				TraceID     string `json:"traceId"`
				RootService string `json:"rootService"`
			}
			_ = json.Unmarshal(m.Data, &list)
			w.mu.Lock()
			for _, t := range list {
				if _, ok := w.seen[t.TraceID]; !ok && t.RootService == "gateway" {
					w.seen[t.TraceID] = now
				}
			}
			w.mu.Unlock()
		}
	}()
	return w
}

// At is when trace id first reached the browser, rooted at the gateway's span.
func (w *TraceWatch) At(id string) (time.Time, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	at, ok := w.seen[id]
	return at, ok
}
