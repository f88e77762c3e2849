package main

import (
	"context"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"microlab/dashboard/views"
	"microlab/lab/loadgen"
	"microlab/services/platform/httpx"
)

// Traffic generator bounds: a classroom laptop runs the whole lab, so the dashboard
// never floods it, and forgotten traffic stops by itself.
const (
	maxTrafficRate     = 20.0 // orders per second
	maxTrafficDuration = 10 * time.Minute
	maxTrafficInFlight = 64 // orders placed and not yet final; beyond, a tick is skipped
)

// traffic is the background order generator behind POST /api/lab/traffic.
type traffic struct {
	gw   *gatewayClient
	log  *slog.Logger
	base context.Context // the server's lifetime: shutdown stops the traffic
	// onChange is told every start and stop (the server broadcasts "traffic").
	onChange func(views.TrafficState)

	mu     sync.Mutex
	cur    views.TrafficState
	cancel context.CancelFunc
	gen    int // which run cur belongs to

	placed, failed atomic.Int64
}

func (t *traffic) state() views.TrafficState {
	if t == nil {
		return views.TrafficState{}
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	s := t.cur
	s.Placed, s.Failed = t.placed.Load(), t.failed.Load()
	return s
}

// start replaces any running traffic with rate orders/s for d, of mix's outcomes (nil:
// loadgen's default mix; an exercise asks for its own).
func (t *traffic) start(rate float64, d time.Duration, mix loadgen.Mix, browse int) views.TrafficState {
	t.mu.Lock()
	if t.cancel != nil {
		t.cancel()
	}
	ctx, cancel := context.WithTimeout(t.base, d)
	t.cancel = cancel
	t.gen++
	gen := t.gen
	t.cur = views.TrafficState{Running: true, Rate: rate, Until: time.Now().Add(d)}
	t.placed.Store(0)
	t.failed.Store(0)
	t.mu.Unlock()
	go func() {
		t.run(ctx, rate, d, mix, browse)
		t.mu.Lock()
		if t.gen == gen { // not replaced by a newer start
			t.cur.Running = false
			t.cancel = nil
		}
		t.mu.Unlock()
		cancel()
		t.notify()
	}()
	s := t.state()
	t.notify()
	return s
}

func (t *traffic) stop() views.TrafficState {
	t.mu.Lock()
	if t.cancel != nil {
		t.cancel()
		t.cancel = nil
	}
	t.cur.Running = false
	t.mu.Unlock()
	t.notify()
	return t.state()
}

func (t *traffic) notify() {
	if t.onChange != nil {
		t.onChange(t.state())
	}
}

// run is the lab's traffic generator (lab/loadgen, the one behind `go run ./lab load`)
// at rate for as long as ctx lasts: the demo users place a mix of checkouts — most
// succeed, some fail in each of the saga's ways (declined card, out of stock,
// unshippable) — and each is followed to its end, as a customer would. Before each
// order a shopper makes browse product reads (exercise 16's cache needs readers).
func (t *traffic) run(ctx context.Context, rate float64, d time.Duration, mix loadgen.Mix, browse int) {
	accounts := make([]loadgen.Account, len(demoUsers))
	for i, u := range demoUsers {
		accounts[i] = loadgen.Account{Email: u.email, Password: u.password}
	}
	count := func(placed, failed int64) {
		t.placed.Store(placed)
		t.failed.Store(failed)
	}
	s, err := loadgen.Run(ctx, loadgen.Config{
		Gateway: t.gw.base, Rate: rate, Duration: d, Mix: mix, Accounts: accounts, Prefix: "traffic",
		MaxInFlight: maxTrafficInFlight, Client: t.gw.http, Browse: browse,
		Progress: func(p loadgen.Progress) { count(p.Placed, p.Rejected+p.Skipped) },
	})
	if err != nil {
		t.log.WarnContext(ctx, "traffic could not start", "err", err)
		t.failed.Add(1)
		return
	}
	count(s.Placed, s.Rejected+s.Skipped)
}

func (s *server) getTraffic(w http.ResponseWriter, r *http.Request) error {
	httpx.WriteJSON(w, http.StatusOK, s.traffic.state())
	return nil
}

// startTraffic: POST /api/lab/traffic {rate, minutes?} → the generator's state.
func (s *server) startTraffic(w http.ResponseWriter, r *http.Request) error {
	var in struct {
		Rate    float64 `json:"rate"`
		Minutes float64 `json:"minutes"`
	}
	if err := httpx.Decode(w, r, &in, 1<<10); err != nil {
		return err
	}
	if in.Rate <= 0 || in.Rate > maxTrafficRate {
		return httpx.Errorf(http.StatusBadRequest, "invalid_rate", "rate must be more than 0 and at most %g orders per second", maxTrafficRate)
	}
	d := maxTrafficDuration
	if in.Minutes != 0 {
		if in.Minutes < 0 || in.Minutes > maxTrafficDuration.Minutes() {
			return httpx.Errorf(http.StatusBadRequest, "invalid_minutes", "minutes must be at most %g", maxTrafficDuration.Minutes())
		}
		d = time.Duration(in.Minutes * float64(time.Minute))
	}
	httpx.WriteJSON(w, http.StatusOK, s.traffic.start(in.Rate, d, nil, 0))
	return nil
}

func (s *server) stopTraffic(w http.ResponseWriter, r *http.Request) error {
	httpx.WriteJSON(w, http.StatusOK, s.traffic.stop())
	return nil
}
