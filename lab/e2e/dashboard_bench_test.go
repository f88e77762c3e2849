package e2e

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"microlab/lab/bench"
	"microlab/lab/stack"
)

// BenchmarkDashboardStreaming drives the lab at a steady 100 checkouts/s with 1 and
// with 50 browsers' websockets connected, and reports:
//
//   - span-to-browser delay: from the gateway's answer to POST /orders (its root span
//     has ended) to the first "traces" message in which that trace's root is the
//     gateway's span (other services' spans of the trace often arrive earlier: they
//     end earlier), p50 and p95;
//
//   - the dashboard's resident memory at the end and CPU used per second of the run,
//     from its own /metrics (process_resident_memory_bytes, process_cpu_seconds_total).
//
//     go test ./lab/e2e -run '^$' -bench DashboardStreaming -benchtime 1000x
//
// b.N is the number of checkouts (at 100/s: 1000x is ten seconds of load).
func BenchmarkDashboardStreaming(b *testing.B) {
	bins := plainBinaries(b)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	for _, clients := range []int{1, 50} {
		b.Run(fmt.Sprintf("clients=%d", clients), func(b *testing.B) {
			l := startLab(b, labOptions{heavy: true, tracing: true, bins: bins, env: []string{"RATE_LIMIT_RPS=0"}})
			d, _ := stack.Find(stack.Dashboard)
			dash := l.cfg.URL(d)
			token := l.api.login(b, "alice@example.com", "alice-secret")

			var seen *bench.TraceWatch
			var conns []*websocket.Conn
			for i := range clients {
				ws, resp, err := websocket.DefaultDialer.Dial(strings.Replace(dash, "http", "ws", 1)+"/ws",
					http.Header{"Origin": {dash}})
				if err != nil {
					b.Fatalf("websocket %d: %v (%v)", i, err, resp)
				}
				conns = append(conns, ws)
				if i == 0 {
					seen = bench.WatchTraces(ws) // the probe
					continue
				}
				go func() { // the other 49 read everything, like a live page
					for {
						if _, _, err := ws.ReadMessage(); err != nil {
							return
						}
					}
				}()
			}
			defer func() {
				for _, c := range conns {
					_ = c.Close()
				}
			}()

			cpu0 := dashboardMetric(b, dash, "process_cpu_seconds_total")
			answered := make([]struct {
				trace string
				at    time.Time
			}, b.N)
			b.ResetTimer()
			start := time.Now()
			var wg sync.WaitGroup
			tick := time.NewTicker(10 * time.Millisecond) // 100 checkouts/s
			for i := range b.N {
				<-tick.C
				wg.Add(1)
				go func() {
					defer wg.Done()
					var out struct {
						TraceID string `json:"traceId"`
					}
					if _, err := l.api.do(ctx, "POST", "/api/v1/orders", token, newOrder(cardOK, skuOK, "DE"), nil, &out); err == nil {
						answered[i].trace, answered[i].at = out.TraceID, time.Now()
					}
				}()
			}
			tick.Stop()
			wg.Wait()
			elapsed := time.Since(start)
			time.Sleep(3 * time.Second) // the last batches of spans
			b.StopTimer()

			var delays []time.Duration
			missing := 0
			for _, a := range answered {
				if a.trace == "" {
					missing++
					continue
				}
				if at, ok := seen.At(a.trace); ok {
					delays = append(delays, max(at.Sub(a.at), 0))
				} else {
					missing++
				}
			}
			if len(delays) == 0 {
				b.Fatalf("no trace of %d checkouts reached the browser", b.N)
			}
			slices.Sort(delays)
			pct := func(p float64) float64 {
				return float64(delays[int(p*float64(len(delays)-1))].Microseconds()) / 1000
			}
			b.ReportMetric(pct(0.50), "delay-p50-ms")
			b.ReportMetric(pct(0.95), "delay-p95-ms")
			b.ReportMetric(float64(missing), "traces-missing")
			b.ReportMetric(dashboardMetric(b, dash, "process_resident_memory_bytes")/(1<<20), "rss-MiB")
			b.ReportMetric((dashboardMetric(b, dash, "process_cpu_seconds_total")-cpu0)/elapsed.Seconds(), "cpu-cores")
		})
	}
}

// dashboardMetric reads one unlabelled metric from the dashboard's /metrics.
func dashboardMetric(b *testing.B, dash, name string) float64 {
	b.Helper()
	resp, err := http.Get(dash + "/metrics")
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				b.Fatal(err)
			}
			return f
		}
	}
	b.Fatalf("dashboard /metrics has no %s", name)
	return 0
}
