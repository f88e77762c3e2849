package e2e

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkCheckoutThroughput measures completed checkouts per second through the
// gateway with every trace sampled and with none, in the same run — the price of
// tracing. Each sub-benchmark runs its own lab (the services built with -race off is
// not possible here: the e2e binaries are race builds, so compare the two numbers with
// each other, not with production).
//
//	go test ./lab/e2e -run '^$' -bench CheckoutThroughput -benchtime 400x
func BenchmarkCheckoutThroughput(b *testing.B) {
	for _, bc := range []struct {
		name  string
		ratio string
	}{{"sampling=on", "1"}, {"sampling=off", "0"}} {
		b.Run(bc.name, func(b *testing.B) {
			l := startLab(b, labOptions{tracing: true, env: []string{"TRACES_SAMPLER_RATIO=" + bc.ratio}})
			token := l.api.login(b, "alice@example.com", "alice-secret")
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
			defer cancel()
			var next atomic.Int64
			var failed atomic.Int64
			b.ResetTimer()
			start := time.Now()
			var wg sync.WaitGroup
			for range 16 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for next.Add(1) <= int64(b.N) {
						id, err := l.api.place(ctx, token, newOrder(cardOK, skuOK, "DE"))
						if err == nil {
							_, err = l.api.waitFinal(ctx, token, id)
						}
						if err != nil {
							failed.Add(1)
						}
					}
				}()
			}
			wg.Wait()
			b.StopTimer()
			if n := failed.Load(); n > 0 {
				b.Fatalf("%d checkouts failed", n)
			}
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "checkouts/s")
		})
	}
}
