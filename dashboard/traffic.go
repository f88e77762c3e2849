package main

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"microlab/dashboard/views"
	"microlab/services/platform/httpx"
)

// Traffic generator bounds: a classroom laptop runs the whole lab, so the dashboard
// never floods it, and forgotten traffic stops by itself.
const (
	maxTrafficRate     = 20.0 // orders per second
	maxTrafficDuration = 10 * time.Minute
	maxTrafficInFlight = 16 // orders waiting for the gateway; beyond, a tick is skipped
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

// start replaces any running traffic with rate orders/s for d.
func (t *traffic) start(rate float64, d time.Duration) views.TrafficState {
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
		t.run(ctx, rate)
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

// run places a mix of checkouts: most succeed, some fail in each of the saga's ways
// (declined card, out of stock, unshippable), as alice and bob.
func (t *traffic) run(ctx context.Context, rate float64) {
	var tmu sync.Mutex // the ticking loop reads tokens, an order that got 401 forgets one
	tokens := map[string]string{}
	login := func(email, pw string) string {
		tmu.Lock()
		tok := tokens[email]
		tmu.Unlock()
		if tok != "" {
			return tok
		}
		lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		tok, _, err := t.gw.login(lctx, email, pw)
		if err != nil {
			t.log.WarnContext(ctx, "traffic: login failed", "email", email, "err", err)
			return ""
		}
		tmu.Lock()
		tokens[email] = tok
		tmu.Unlock()
		return tok
	}
	tick := time.NewTicker(time.Duration(float64(time.Second) / rate))
	defer tick.Stop()
	sem := make(chan struct{}, maxTrafficInFlight)
	var wg sync.WaitGroup
	defer wg.Wait()
	skus := []string{"LAB-MUG", "LAB-TEE", "LAB-HOODIE", "LAB-STICKERS", "LAB-PEN", "LAB-CAP"}
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		u := demoUsers[rand.IntN(len(demoUsers))]
		tok := login(u.email, u.password)
		if tok == "" {
			t.failed.Add(1)
			continue
		}
		in := orderInput{SKU: skus[rand.IntN(len(skus))], Qty: 1 + rand.IntN(2), Card: "ok", Country: "DE"}
		switch n := rand.IntN(10); {
		case n == 0:
			in.Card = "declined"
		case n == 1:
			in.SKU = "LAB-UNICORN"
		case n == 2:
			in.Country = "XX"
		}
		select {
		case sem <- struct{}{}:
		default:
			t.failed.Add(1) // the gateway is not keeping up: skip rather than pile up
			continue
		}
		wg.Go(func() {
			defer func() { <-sem }()
			octx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			_, err := t.gw.placeOrder(octx, tok, "traffic", in)
			if ge, ok := err.(*gatewayError); ok && ge.status == http.StatusUnauthorized {
				tmu.Lock()
				delete(tokens, u.email) // expired: the next tick logs in again
				tmu.Unlock()
			}
			if err != nil {
				t.failed.Add(1)
				return
			}
			t.placed.Add(1)
		})
	}
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
	httpx.WriteJSON(w, http.StatusOK, s.traffic.start(in.Rate, d))
	return nil
}

func (s *server) stopTraffic(w http.ResponseWriter, r *http.Request) error {
	httpx.WriteJSON(w, http.StatusOK, s.traffic.stop())
	return nil
}
