// Package loadgen is the lab's shop traffic: shoppers who log in, browse and place
// orders through the gateway's public API, open-loop at a target rate, with a mix of
// outcomes (confirmed, declined, out of stock, unshippable), each order followed until
// its saga ends. `go run ./lab load`, `lab bench`, `lab chaos` and the dashboard's
// traffic button all use it.
//
// Open loop: orders are sent on a schedule (the i-th at start + i/rate), whether or not
// the shop keeps up, so a slow shop shows as latency and a growing number in flight —
// not as a generator that politely slows down (closed-loop generators hide overload).
// What is in flight is bounded (MaxInFlight): beyond it a scheduled order is skipped and
// counted, so a rate the machine cannot hold degrades the run and says so, instead of
// wedging it.
package loadgen

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Config is one run.
type Config struct {
	Gateway  string        // the gateway's base URL (http://127.0.0.1:8000); must be on this machine
	Rate     float64       // orders per second
	Duration time.Duration // placing stops after it; orders in flight are then followed to their end
	Mix      Mix           // nil: DefaultMix
	// Shoppers to spread the orders over (0: 20). They are registered on first use
	// (<Prefix>-NNN@example.com) and logged in once each.
	Shoppers int
	// Accounts, if given, are existing shoppers to log in as instead of registering
	// Shoppers of the generator's own (the dashboard places its traffic as the demo
	// users, so a learner sees it in their Shop).
	Accounts []Account
	// Browse is how many reads (the product list, a product, the home page) each
	// shopper makes per order (0: none).
	Browse int
	// MaxInFlight bounds orders placed and not yet final (0: 30 s worth at Rate, at
	// least 64). A scheduled order beyond it is skipped and counted.
	MaxInFlight int
	// Follow is how long an order may take to reach its final status before it counts
	// as unfinished (0: 30 s).
	Follow time.Duration
	// Stop, if set, stops placing early when it is closed (lab chaos: once its last fault
	// has played out); orders in flight are still followed to their end, and the summary's
	// Duration is how long placing lasted. Duration still bounds the run.
	Stop <-chan struct{}
	// Prefix names the shoppers and the idempotency keys ("" : "load").
	Prefix string
	// Progress, if set, is called about every second while the run lasts, and once at
	// its end with Done set.
	Progress func(Progress)
	// Started, if set, is called once the shoppers are logged in, just before the first
	// order is placed: what a caller measures about the run itself (lab bench: CPU and
	// database counters) starts there, not with the logins.
	Started func()
	// Client is the HTTP client (nil: one sized for the rate).
	Client *http.Client
}

func (c *Config) defaults() error {
	if c.Rate <= 0 || c.Rate > MaxRate {
		return fmt.Errorf("rate %g/s: want more than 0 and at most %d/s", c.Rate, MaxRate)
	}
	if c.Duration <= 0 || c.Duration > MaxDuration {
		return fmt.Errorf("duration %s: want more than 0 and at most %s", c.Duration, MaxDuration)
	}
	if c.Mix == nil {
		c.Mix = DefaultMix
	}
	if len(c.Accounts) > 0 {
		c.Shoppers = len(c.Accounts)
	}
	if c.Shoppers <= 0 {
		c.Shoppers = 20
	}
	if c.Shoppers > 1000 {
		return fmt.Errorf("shoppers %d: at most 1000", c.Shoppers)
	}
	if c.Browse < 0 || c.Browse > 10 {
		return fmt.Errorf("browse %d: want 0 to 10 reads per order", c.Browse)
	}
	if c.MaxInFlight <= 0 {
		c.MaxInFlight = max(64, int(c.Rate*30))
	}
	if c.Follow <= 0 {
		c.Follow = 30 * time.Second
	}
	if c.Prefix == "" {
		c.Prefix = "load"
	}
	if c.Client == nil {
		c.Client = &http.Client{Transport: &http.Transport{
			MaxIdleConns: 512, MaxIdleConnsPerHost: 512, IdleConnTimeout: 30 * time.Second,
		}}
	}
	return nil
}

// Account is a shopper's e-mail and password.
type Account struct{ Email, Password string }

// Timeouts of each call, so a wedged shop shows as errors, never as a wedged generator.
const (
	callTimeout  = 10 * time.Second
	loginTimeout = 20 * time.Second // bcrypt, on a busy machine
)

// Run generates the traffic Config describes, and returns what happened. It returns an
// error only when the run could not start (a bad Config, a gateway that is not local or
// does not answer, shoppers who cannot log in); failures during the run are counted in
// the summary. Cancelling ctx ends the run early, following nothing further.
func Run(ctx context.Context, cfg Config) (Summary, error) {
	if err := cfg.defaults(); err != nil {
		return Summary{}, err
	}
	if err := CheckLocal(ctx, cfg.Gateway); err != nil {
		return Summary{}, err
	}
	r := &run{cfg: cfg, c: NewClient(cfg.Gateway, cfg.Client), sem: make(chan struct{}, cfg.MaxInFlight),
		outcomes: newPicker(cfg.Mix)}
	r.stats.init()
	r.report(Progress{Phase: "preparing", Target: cfg.Rate, Shoppers: cfg.Shoppers})
	if err := r.prepare(ctx); err != nil {
		return Summary{}, err
	}
	if cfg.Started != nil {
		cfg.Started()
	}
	r.start = time.Now()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.schedule(ctx)
		r.wg.Wait()
	}()
	for {
		select {
		case <-done:
			s := r.summary()
			r.report(s.Progress)
			return s, nil
		case <-tick.C:
			r.report(r.progress(false))
		}
	}
}

type run struct {
	cfg   Config
	c     *Client
	sem   chan struct{} // one per order in flight
	wg    sync.WaitGroup
	start time.Time

	stoppedAt atomic.Int64 // placing stopped early (Config.Stop) this long after start (ns); 0: not

	outcomes *picker
	skus     []string  // in stock: what ok, declined and xx orders buy
	shoppers []shopper // logged in
	seq      atomic.Int64

	stats stats
}

type shopper struct {
	email, password string
	mu              sync.Mutex
	token           string
}

func (r *run) report(p Progress) {
	if r.cfg.Progress != nil {
		r.cfg.Progress(p)
	}
}

// prepare learns the catalogue and logs every shopper in, registering the ones that do
// not exist yet.
func (r *run) prepare(ctx context.Context) error {
	var list struct {
		Items []struct {
			SKU string `json:"sku"`
		} `json:"items"`
	}
	cctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	if err := r.c.Do(cctx, http.MethodGet, "/api/v1/products", "", nil, nil, &list); err != nil {
		return fmt.Errorf("the gateway at %s does not list products (is the lab up?): %w", r.cfg.Gateway, err)
	}
	for _, p := range list.Items {
		if p.SKU != unicorn {
			r.skus = append(r.skus, p.SKU)
		}
	}
	if len(r.skus) == 0 {
		return errors.New("the catalogue lists no product that is in stock")
	}
	r.shoppers = make([]shopper, r.cfg.Shoppers)
	var emu sync.Mutex
	var errs []error
	sem := make(chan struct{}, 4) // bcrypt: a few at a time, the lab serves others too
	var wg sync.WaitGroup
	var ready atomic.Int64
	for i := range r.shoppers {
		s := &r.shoppers[i]
		enrol := r.enrol
		if i < len(r.cfg.Accounts) {
			s.email, s.password = r.cfg.Accounts[i].Email, r.cfg.Accounts[i].Password
			enrol = r.login // they exist
		} else {
			s.email = fmt.Sprintf("%s-%03d@example.com", r.cfg.Prefix, i+1)
			s.password = fmt.Sprintf("%s-shopper-%03d", r.cfg.Prefix, i+1)
		}
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			if err := enrol(ctx, s); err != nil {
				emu.Lock()
				errs = append(errs, fmt.Errorf("shopper %s: %w", s.email, err))
				emu.Unlock()
				return
			}
			r.report(Progress{Phase: "preparing", Target: r.cfg.Rate, Ready: int(ready.Add(1)), Shoppers: len(r.shoppers)})
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// enrol registers s (a 409 means it exists) and logs it in.
func (r *run) enrol(ctx context.Context, s *shopper) error {
	cctx, cancel := context.WithTimeout(ctx, loginTimeout)
	defer cancel()
	err := r.c.Do(cctx, http.MethodPost, "/api/v1/users", "",
		map[string]string{"email": s.email, "name": "Load shopper", "password": s.password}, nil, nil)
	if err != nil && StatusOf(err) != http.StatusConflict {
		return fmt.Errorf("register: %w", err)
	}
	return r.login(ctx, s)
}

func (r *run) login(ctx context.Context, s *shopper) error {
	cctx, cancel := context.WithTimeout(ctx, loginTimeout)
	defer cancel()
	var out struct {
		Token string `json:"token"`
	}
	if err := r.c.Do(cctx, http.MethodPost, "/api/v1/auth/login", "",
		map[string]string{"email": s.email, "password": s.password}, nil, &out); err != nil {
		return fmt.Errorf("log in: %w", err)
	}
	s.mu.Lock()
	s.token = out.Token
	s.mu.Unlock()
	return nil
}

func (s *shopper) tok() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.token
}

// placingFor is how long placing lasts: Duration, unless Stop ended it earlier.
func (r *run) placingFor() time.Duration {
	if d := r.stoppedAt.Load(); d > 0 {
		return time.Duration(d)
	}
	return r.cfg.Duration
}

// schedule sends the i-th order at start + i/rate until Duration is over (or ctx ends,
// or Stop is closed).
func (r *run) schedule(ctx context.Context) {
	interval := time.Duration(float64(time.Second) / r.cfg.Rate)
	end := r.start.Add(r.cfg.Duration)
	timer := time.NewTimer(0)
	defer timer.Stop()
	stop := func() { // to the 100 ms, as the summary shows it
		r.stoppedAt.Store(max(int64(time.Since(r.start).Round(100*time.Millisecond)), 1))
	}
	for i := int64(0); ; i++ {
		at := r.start.Add(time.Duration(i) * interval)
		if !at.Before(end) {
			return
		}
		if d := time.Until(at); d > 0 {
			timer.Reset(d)
			select {
			case <-ctx.Done():
				return
			case <-r.cfg.Stop:
				stop()
				return
			case <-timer.C:
			}
		} else if ctx.Err() != nil {
			return
		} else {
			select {
			case <-r.cfg.Stop:
				stop()
				return
			default:
			}
		}
		r.stats.scheduled.Add(1)
		select {
		case r.sem <- struct{}{}:
		default:
			r.stats.skipped.Add(1) // the shop is not keeping up: skip, never pile up
			continue
		}
		r.wg.Go(func() {
			defer func() { <-r.sem }()
			r.order(ctx)
		})
	}
}

// unicorn is the one product never in stock: an order for it ends out_of_stock.
const unicorn = "LAB-UNICORN"

// Cards of the lab's payment rules.
const (
	cardOK       = "4242 4242 4242 4242"
	cardDeclined = "4000 0000 0000 0002"
)

// order is one shopper's visit: a few reads, an order, then following it to its end.
func (r *run) order(ctx context.Context) {
	n := r.seq.Add(1)
	s := &r.shoppers[int(n-1)%len(r.shoppers)]
	for range r.cfg.Browse {
		r.browse(ctx, s)
	}
	outcome := r.outcomes.next()
	sku, card, country := r.skus[rand.IntN(len(r.skus))], cardOK, "DE"
	switch outcome {
	case Declined:
		card = cardDeclined
	case OOS:
		sku = unicorn
	case XX:
		country = "XX"
	}
	body := map[string]any{
		"items":   []map[string]any{{"sku": sku, "qty": 1 + rand.IntN(2)}},
		"payment": map[string]string{"card": card},
		"shippingAddress": map[string]string{"name": "Load Shopper", "street": "1 Main St", "city": "Berlin",
			"postalCode": "10115", "country": country},
	}
	key := r.cfg.Prefix + "-" + strconv.FormatInt(r.start.UnixNano(), 36) + "-" + strconv.FormatInt(n, 10)
	var accepted struct {
		OrderID string `json:"orderId"`
		TraceID string `json:"traceId"`
	}
	t0 := time.Now()
	err := r.call(ctx, s, http.MethodPost, "/api/v1/orders", body, map[string]string{"Idempotency-Key": key}, &accepted)
	took := time.Since(t0)
	r.stats.placement(took, err)
	if err != nil {
		return
	}
	r.stats.placedOrder(accepted.OrderID, accepted.TraceID, outcome, t0.Add(took), took)
	r.follow(ctx, s, accepted.OrderID, outcome, t0)
}

// call is a shopper's call, logging in again once when its token has expired.
func (r *run) call(ctx context.Context, s *shopper, method, path string, body any, headers map[string]string, out any) error {
	for attempt := 0; ; attempt++ {
		cctx, cancel := context.WithTimeout(ctx, callTimeout)
		err := r.c.Do(cctx, method, path, s.tok(), body, headers, out)
		cancel()
		if StatusOf(err) != http.StatusUnauthorized || attempt > 0 {
			return err
		}
		if lerr := r.login(ctx, s); lerr != nil {
			return err
		}
	}
}

func (r *run) browse(ctx context.Context, s *shopper) {
	var path string
	switch rand.IntN(3) {
	case 0:
		path = "/api/v1/products"
	case 1:
		path = "/api/v1/products/" + r.skus[rand.IntN(len(r.skus))]
	default:
		path = "/api/v1/home"
	}
	err := r.call(ctx, s, http.MethodGet, path, nil, nil, nil)
	r.stats.browsed(err)
}

// follow polls the order until it is final, at 100 ms, then doubling to 1 s apart.
func (r *run) follow(ctx context.Context, s *shopper, id string, want Outcome, placed time.Time) {
	wait := 100 * time.Millisecond
	deadline := placed.Add(r.cfg.Follow)
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			r.stats.unfinished(id)
			return
		case <-timer.C:
		}
		var o order
		r.stats.polls.Add(1)
		err := r.call(ctx, s, http.MethodGet, "/api/v1/orders/"+id, nil, nil, &o)
		if err == nil && o.Status != "pending" {
			r.stats.final(id, want, o)
			return
		}
		if err != nil {
			r.stats.followErrors.Add(1)
		}
		if time.Now().After(deadline) {
			r.stats.unfinished(id)
			return
		}
		wait = min(2*wait, time.Second)
		timer.Reset(min(wait, max(time.Until(deadline), time.Millisecond)))
	}
}
