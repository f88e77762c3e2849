package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"microlab/services/contracts"
	"microlab/services/platform/control"
)

var modes = []string{"choreography", "orchestration"}

// TestShop runs the tests that change nothing but what is their own (a user, an order,
// a message of their own) against one shared lab in choreography: a lab is ten -race
// processes, and these tests need no more than one between them. They run one after
// the other, deliberately not t.Parallel: a test holding a lab slot must never wait for
// a parallel-test slot that tests waiting for lab slots may hold (a deadlock).
func TestShop(t *testing.T) {
	t.Parallel()
	l := startLab(t, labOptions{})
	for _, tc := range []struct {
		name string
		test func(*testing.T, *lab)
	}{
		{"CheckoutOutcomes", testCheckoutOutcomes},
		{"BadInputThroughTheStack", testBadInputThroughTheStack},
		{"IdempotencyKey", testIdempotencyKey},
		{"HostileInputDoesNotTripTheBreaker", testHostileInputDoesNotTripTheBreaker},
		{"MalformedMessageIsDeadLettered", testMalformedMessageIsDeadLettered},
	} {
		t.Run(tc.name, func(t *testing.T) { tc.test(t, l) })
	}
}

// TestCheckoutOutcomesOrchestrated is TestShop's CheckoutOutcomes in the other saga mode.
func TestCheckoutOutcomesOrchestrated(t *testing.T) {
	t.Parallel()
	l := startLab(t, labOptions{settings: map[string]string{control.SagaMode: contracts.ModeOrchestration}})
	testCheckoutOutcomes(t, l)
}

// testCheckoutOutcomes checks every outcome of the checkout saga (DESIGN §5) in the
// lab's saga mode, through the public API and against the payments and inventory
// ledgers.
func testCheckoutOutcomes(t *testing.T, l *lab) {
	mode := l.setting(control.SagaMode)
	token := l.api.login(t, "alice@example.com", "alice-secret")
	cases := []struct {
		name, card, sku, country string
		status, reason           string
		stockDelta               int
	}{
		{"happy path", cardOK, "LAB-TEE", "DE", "confirmed", "", -2},
		{"card declined", cardDeclined, "LAB-CAP", "DE", "cancelled", "payment_declined", 0},
		{"out of stock", cardOK, skuOOS, "DE", "cancelled", "out_of_stock", 0},
		{"shipping impossible", cardOK, "LAB-SOCKS", "XX", "cancelled", "shipping_failed", 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			before := l.stock(ctx, tc.sku)
			id, err := placeOne(l, token, newOrder(tc.card, tc.sku, tc.country))
			if err != nil {
				t.Fatal(err)
			}
			o, err := l.api.waitFinal(ctx, token, id)
			if err != nil {
				t.Fatal(err)
			}
			if o.Status != tc.status || o.CancelReason != tc.reason || o.SagaMode != mode {
				t.Fatalf("order %s: status %q reason %q mode %q; want %q %q %q; steps %+v",
					id, o.Status, o.CancelReason, o.SagaMode, tc.status, tc.reason, mode, o.Steps)
			}
			if len(o.Steps) < 2 {
				t.Fatalf("order shows no saga steps: %+v", o.Steps)
			}
			if err := l.checkLedgers(ctx, o); err != nil {
				t.Fatal(err)
			}
			if after := l.stock(ctx, tc.sku); after-before != tc.stockDelta {
				t.Fatalf("stock of %s moved by %d, want %d", tc.sku, after-before, tc.stockDelta)
			}
		})
	}
}

// checkout is one order of a batch with the outcome its inputs determine.
type checkout struct {
	req            orderRequest
	status, reason string
}

func mixedBatch(n int) []checkout {
	kinds := []checkout{
		{newOrder(cardOK, skuOK, "DE"), "confirmed", ""},
		{newOrder(cardDeclined, skuOK, "DE"), "cancelled", "payment_declined"},
		{newOrder(cardOK, skuOOS, "DE"), "cancelled", "out_of_stock"},
		{newOrder(cardOK, skuOK, "XX"), "cancelled", "shipping_failed"},
	}
	out := make([]checkout, n)
	for i := range out {
		out[i] = kinds[i%len(kinds)]
	}
	rand.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	return out
}

// placeOne places one order. A placement may hit a service that is restarting (chaos
// tests): it retries with the same Idempotency-Key, so a retried request never doubles
// an order.
func placeOne(l *lab, token string, req orderRequest) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	key := fmt.Sprintf("e2e-%d-%d", time.Now().UnixNano(), rand.Int64())
	for attempt := 0; ; attempt++ {
		var out struct {
			OrderID string `json:"orderId"`
		}
		_, err := l.api.do(ctx, "POST", "/api/v1/orders", token, req, map[string]string{"Idempotency-Key": key}, &out)
		if err == nil {
			return out.OrderID, nil
		}
		if ctx.Err() != nil {
			return "", err
		}
		time.Sleep(time.Duration(100*(attempt+1)) * time.Millisecond)
	}
}

// placeBatch places every checkout concurrently (bounded by workers); order i is placed
// by user tokens[i%len(tokens)]. It returns the order ids, index-aligned with batch.
func placeBatch(t *testing.T, l *lab, batch []checkout, workers int, tokens []string) []string {
	t.Helper()
	ids := make([]string, len(batch))
	errs := make([]error, len(batch))
	sem := make(chan struct{}, workers)
	var wg sync.WaitGroup
	for i, c := range batch {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			ids[i], errs[i] = placeOne(l, tokens[i%len(tokens)], c.req)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("placing order %d: %v", i, err)
		}
	}
	return ids
}

type placedBatch struct {
	batch  []checkout
	ids    []string
	tokens []string // who placed each order (only its owner may read it)
}

// placeUntil keeps placing a mix of checkouts from workers goroutines until stop is
// closed and at least minOrders were placed, so that a fault injected meanwhile always
// hits a shop that is busy, however slowly a loaded machine places them. It never fails
// the test itself (it runs outside the test's goroutine, where t.Fatal would leave the
// caller waiting forever): it returns what it placed and the errors it met, and gives up
// after the deadline.
func placeUntil(l *lab, stop <-chan struct{}, workers, minOrders int, tokens []string, deadline time.Time) (placedBatch, []error) {
	var (
		mu   sync.Mutex
		out  placedBatch
		errs []error
		wg   sync.WaitGroup
	)
	enough := func() bool {
		select {
		case <-stop:
		default:
			return false
		}
		mu.Lock()
		defer mu.Unlock()
		return len(out.ids) >= minOrders || time.Now().After(deadline)
	}
	kinds := mixedBatch(4)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			token := tokens[w%len(tokens)]
			for !enough() {
				c := kinds[rand.IntN(len(kinds))]
				id, err := placeOne(l, token, c.req)
				mu.Lock()
				if err != nil {
					errs = append(errs, err)
				} else {
					out.batch, out.ids, out.tokens = append(out.batch, c), append(out.ids, id), append(out.tokens, token)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return out, errs
}

// awaitBatch waits until every order is final and checks outcome and ledgers.
func awaitBatch(t *testing.T, l *lab, batch []checkout, ids []string, tokens []string, within time.Duration) {
	t.Helper()
	if len(tokens) != len(ids) { // one token per user: order i belongs to user i%len
		perOrder := make([]string, len(ids))
		for i := range ids {
			perOrder[i] = tokens[i%len(tokens)]
		}
		tokens = perOrder
	}
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	errs := make(chan error, len(ids))
	sem := make(chan struct{}, 16)
	var wg sync.WaitGroup
	for i, id := range ids {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			o, err := l.api.waitFinal(ctx, tokens[i], id)
			if err != nil {
				errs <- err
				return
			}
			if o.Status != batch[i].status || o.CancelReason != batch[i].reason {
				errs <- fmt.Errorf("order %s: %s/%s, want %s/%s", id, o.Status, o.CancelReason, batch[i].status, batch[i].reason)
				return
			}
			if err := l.checkLedgers(ctx, o); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	n := 0
	for err := range errs {
		if n < 10 {
			t.Error(err)
		}
		n++
	}
	if n > 0 {
		t.Fatalf("%d of %d orders wrong", n, len(ids))
	}
}

func users(t *testing.T, l *lab, n int) []string {
	tokens := make([]string, n)
	for i := range tokens {
		tokens[i] = l.api.register(t, fmt.Sprintf("shopper%d", i))
	}
	return tokens
}

// 200 checkouts at once, a mix of every outcome: all reach a final state and the ledgers
// agree for every one of them. How fast is `lab bench`'s question, not this test's: the
// deadline only bounds a run that would otherwise wait forever, and the time is logged.
func TestConcurrentCheckouts(t *testing.T) {
	t.Parallel()
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			l := startLab(t, labOptions{heavy: true, settings: map[string]string{control.SagaMode: mode}})
			tokens := users(t, l, 8)
			batch := mixedBatch(200)
			start := time.Now()
			ids := placeBatch(t, l, batch, 50, tokens)
			awaitBatch(t, l, batch, ids, tokens, 5*time.Minute)
			t.Logf("%s: 200 mixed checkouts final and consistent in %s", mode, time.Since(start).Round(time.Millisecond))
		})
	}
}

// Scale-out is configuration, not a rewrite (DESIGN §6): with two instances of orders,
// payments and inventory competing on their queues and two outbox relays per database,
// a mixed batch still ends with every ledger consistent, in both modes.
func TestScaledOut(t *testing.T) {
	t.Parallel()
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			l := startLab(t, labOptions{heavy: true,
				settings: map[string]string{control.SagaMode: mode},
				scale:    map[string]int{"orders": 2, "payments": 2, "inventory": 2},
			})
			for _, q := range []string{"orders.events", "payments.events", "inventory.events"} {
				if n := l.consumers(t, q); n != 2 {
					t.Fatalf("%s has %d consumers, want 2 competing instances", q, n)
				}
			}
			tokens := users(t, l, 4)
			batch := mixedBatch(120)
			ids := placeBatch(t, l, batch, 24, tokens)
			awaitBatch(t, l, batch, ids, tokens, 5*time.Minute)
		})
	}
}
