package e2e

import (
	"context"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"microlab/lab/stack"
)

// BenchmarkCheckoutThroughput measures completed checkouts per second through the
// gateway with every trace sampled and with none, in the same run — the price of
// tracing. Each sub-benchmark runs its own lab and Jaeger on this machine, with the
// services built without -race; the shared, noisy machine makes the ratio of the two
// numbers the result, not either number alone.
//
//	go test ./lab/e2e -run '^$' -bench CheckoutThroughput -benchtime 400x
//
// Plain builds for benchmarks, once per test binary: the race detector's overhead
// would swamp what they measure.
var (
	plainOnce sync.Once
	plainDir  string
	plainErr  error
)

func plainBinaries(b *testing.B) string {
	b.Helper()
	plainOnce.Do(func() {
		if plainDir, plainErr = os.MkdirTemp("", "microlab-bench-bin-"); plainErr != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		plainErr = stack.Build(ctx, repoRoot(), plainDir, io.Discard)
	})
	if plainErr != nil {
		b.Fatalf("build services: %v", plainErr)
	}
	return plainDir
}

func BenchmarkCheckoutThroughput(b *testing.B) {
	bins := plainBinaries(b)
	for _, bc := range []struct {
		name  string
		ratio string
	}{{"sampling=on", "1"}, {"sampling=off", "0"}} {
		b.Run(bc.name, func(b *testing.B) {
			l := startLab(b, labOptions{heavy: true, tracing: true, bins: bins,
				// One user polling its orders is a load generator, not an abuser.
				env: []string{"TRACES_SAMPLER_RATIO=" + bc.ratio, "RATE_LIMIT_RPS=0"}})
			token := l.api.login(b, "alice@example.com", "alice-secret")
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
			defer cancel()
			var next, failed atomic.Int64
			var firstErr atomic.Value
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
							firstErr.CompareAndSwap(nil, err.Error())
						}
					}
				}()
			}
			wg.Wait()
			b.StopTimer()
			if n := failed.Load(); n > 0 {
				b.Fatalf("%d checkouts failed; the first: %v", n, firstErr.Load())
			}
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "checkouts/s")
		})
	}
}
