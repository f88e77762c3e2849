package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/crypto/bcrypt"

	"microlab/observability"
	"microlab/services/contracts"
	"microlab/services/platform/app"
	"microlab/services/platform/pg"
	"microlab/services/shop"
)

// Monolith is the shop's every capability in one place: each "service" of the other
// build is a method here, and calling it is a function call inside one transaction.
type Monolith struct {
	app       *app.App
	store     *Store
	signer    *shop.Signer
	cost      int    // bcrypt work factor
	dummyHash []byte // compared against for unknown emails (as users does)
}

// Domain outcomes, translated to HTTP once in api.go.
var (
	errEmailTaken         = errors.New("email already registered")
	errInvalidCredentials = errors.New("invalid email or password")
	errKeyReused          = errors.New("idempotency key reused with a different request")
)

// UnknownSKUError names a SKU the shop does not sell.
type UnknownSKUError struct{ SKU string }

func (e *UnknownSKUError) Error() string { return "unknown sku " + e.SKU }

// currency: the shop sells in euros only.
const currency = "EUR"

// Seed inserts what users, catalog and inventory seed (services/shop): the products
// with their stock, and the demo accounts, through Register like any sign-up.
func (m *Monolith) Seed(ctx context.Context) error {
	if err := m.store.SeedProducts(ctx); err != nil {
		return err
	}
	for _, acc := range shop.DemoAccounts {
		if _, _, err := m.store.UserByEmail(ctx, acc.Email); err == nil {
			continue
		} else if !errors.Is(err, errNotFound) {
			return err
		}
		if _, err := m.Register(ctx, acc); err != nil && !errors.Is(err, errEmailTaken) {
			return err
		}
	}
	return nil
}

// Register creates a user by users' rules (shop.Account.Validate). No event: nothing
// outside the monolith needs to hear of it (users announces user.registered for
// notifications; here a welcome would be one more function call).
func (m *Monolith) Register(ctx context.Context, in shop.Account) (User, error) {
	in, err := in.Validate() // keeps ID
	if err != nil {
		return User{}, err
	}
	hash, err := bcrypt.GenerateFromPassword([]byte(in.Password), m.cost)
	if err != nil {
		return User{}, fmt.Errorf("hash password: %w", err)
	}
	id := in.ID // a demo account's fixed id (services/shop), the same as users'
	if id == "" {
		id = uuid.NewString()
	}
	u := User{ID: id, Email: in.Email, Name: in.Name}
	fresh, err := m.store.InsertUser(ctx, u, hash)
	if err != nil {
		return User{}, err
	}
	if !fresh {
		return User{}, errEmailTaken
	}
	m.app.Log.InfoContext(ctx, "user registered", "user_id", u.ID)
	return u, nil
}

// Session is what a successful login returns (users' shape).
type Session struct {
	Token     string    `json:"token"`
	ExpiresAt time.Time `json:"expiresAt"`
}

// Login checks a password and issues a token, with users' defence against a timing
// oracle (an unknown email is compared against a dummy hash of the same cost).
func (m *Monolith) Login(ctx context.Context, email, password string) (Session, error) {
	u, hash, err := m.store.UserByEmail(ctx, shop.NormalizeEmail(email))
	switch {
	case errors.Is(err, errNotFound):
		_ = bcrypt.CompareHashAndPassword(m.dummyHash, []byte(password))
		return Session{}, errInvalidCredentials
	case err != nil:
		return Session{}, err
	}
	if bcrypt.CompareHashAndPassword(hash, []byte(password)) != nil {
		return Session{}, errInvalidCredentials
	}
	token, exp, err := m.signer.Sign(u.ID, u.Email, u.Name, time.Now())
	if err != nil {
		return Session{}, err
	}
	return Session{Token: token, ExpiresAt: exp.UTC()}, nil
}

// PlaceRequest is the body of POST /orders: orders' own (services/shop), validated and
// hashed for Idempotency-Key by the same code on both sides.
type PlaceRequest = shop.OrderRequest

// Line is one requested order line.
type Line = shop.Line

// failure is a checkout step that said no: the order's cancel reason and what the step
// leaves on record once the transaction's work is rolled back.
type failure struct {
	reason string // the saga's cancel reason (contracts.Reason*)
	step   Step   // the failing step, logged after the rollback
	record func(ctx context.Context) error
}

// Checkout places an order and runs the whole checkout, to its end, before answering:
// authorize the payment, reserve the stock, schedule the shipment, capture the payment,
// confirm. The steps run in the saga's order (payments first, as order.placed reaches
// payments first), so every combination of failures ends as it does with the
// microservices: a declined card with an out-of-stock unicorn is payment_declined on
// both sides.
//
// Where the saga compensates, the monolith rolls back. The order row is written first;
// the steps run after a SAVEPOINT; when one fails, ROLLBACK TO SAVEPOINT undoes every
// stock decrement, reservation and payment row the earlier steps wrote, atomically, and
// the order is then marked cancelled in the same transaction. No refund message, no
// release, no moment at which stock is taken for an order that will be cancelled: the
// price is that every table sits in one database, locked for the length of a checkout.
//
// A repeated Idempotency-Key with the same request returns the first order.
func (m *Monolith) Checkout(ctx context.Context, userID, key string, req PlaceRequest) (string, error) {
	hash := req.Hash()
	if key != "" {
		id, err := m.replay(ctx, userID, key, hash)
		if !errors.Is(err, errNotFound) {
			return id, err
		}
	}
	lines := make([]shop.StockLine, len(req.Items))
	skus := make([]string, 0, len(req.Items))
	for i, l := range req.Items {
		lines[i] = shop.StockLine{SKU: l.SKU, Qty: l.Qty}
		skus = append(skus, l.SKU)
	}
	products, err := m.store.Prices(ctx, skus)
	if err != nil {
		return "", err
	}
	prices := map[string]int64{}
	for _, l := range lines {
		p, ok := products[l.SKU]
		if !ok {
			return "", &UnknownSKUError{SKU: l.SKU}
		}
		prices[l.SKU] = p.PriceCents
	}
	items, total := shop.Price(lines, prices)
	o := Order{ID: uuid.NewString(), UserID: userID, Status: statusPending, TotalCents: total, Currency: currency,
		Address: req.ShippingAddress, CardLast4: shop.Last4(req.Card), Items: items,
		CreatedAt: time.Now().UTC().Truncate(time.Microsecond)}
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		o.TraceID = sc.TraceID().String()
	}
	var status, reason string
	err = pg.InTx(ctx, m.app.DB, func(ctx context.Context) error {
		if key != "" {
			if err := m.store.ClaimKey(ctx, userID, key, hash, o.ID); err != nil {
				return err
			}
		}
		if err := m.store.InsertOrder(ctx, o); err != nil {
			return err
		}
		q := pg.Q(ctx, m.app.DB)
		if _, err := q.Exec(ctx, `SAVEPOINT checkout`); err != nil {
			return fmt.Errorf("savepoint: %w", err)
		}
		done := []Step{{Name: "order", Status: "placed", At: o.CreatedAt,
			Detail: fmt.Sprintf("%d line(s), %d cents, one transaction (monolith)", len(items), total)}}
		steps, fail, err := m.steps(ctx, o, req.Card, lines)
		if err != nil {
			return err
		}
		done = append(done, steps...)
		status = statusConfirmed
		if fail != nil {
			if _, err := q.Exec(ctx, `ROLLBACK TO SAVEPOINT checkout`); err != nil {
				return fmt.Errorf("rollback to savepoint: %w", err)
			}
			if fail.record != nil {
				if err := fail.record(ctx); err != nil {
					return err
				}
			}
			status, reason = statusCancelled, fail.reason
			done = append(done, fail.step, Step{Name: "transaction", Status: "rolled_back", At: time.Now().UTC(),
				Detail: "every step before it undone by ROLLBACK TO SAVEPOINT: no compensation needed"})
		}
		done = append(done, Step{Name: "order", Status: status, At: time.Now().UTC(), Detail: reason})
		if err := m.store.AddSteps(ctx, o.ID, done); err != nil {
			return err
		}
		return m.store.Finish(ctx, o.ID, status, reason)
	})
	if errors.Is(err, errKeyTaken) {
		id, err := m.replay(ctx, userID, key, hash)
		if errors.Is(err, errNotFound) {
			return "", fmt.Errorf("idempotency key %q taken but not readable", key)
		}
		return id, err
	}
	if err != nil {
		return "", fmt.Errorf("checkout: %w", err)
	}
	m.app.Log.InfoContext(ctx, "order placed", "order_id", o.ID, "user_id", userID, "total_cents", total,
		"status", status, "reason", reason, "card_last4", o.CardLast4)
	return o.ID, nil
}

// steps runs the checkout's steps in the transaction in ctx, each in a span of its own
// (so the trace shows the call chain: one process, SQL spans under each step). It stops
// at the first step that says no and returns it; err is a failure of the database, not
// a business outcome.
func (m *Monolith) steps(ctx context.Context, o Order, card string, lines []shop.StockLine) ([]Step, *failure, error) {
	var done []Step
	now := func() time.Time { return time.Now().UTC() }

	// payments: the issuer's decision (shop.CardDecision, payments' rule).
	sctx, span := m.app.Tel.Step(ctx, "authorize payment", attribute.String("order.id", o.ID))
	last4, declined := shop.CardDecision(card)
	if declined != "" {
		observability.StepFailed(sctx, "authorize payment", declined)
		span.End()
		return done, &failure{reason: contracts.ReasonPaymentDeclined,
			step: Step{Name: "payment", Status: "declined", At: now(), Detail: declined},
			// Recorded after the rollback, as payments' ledger records a decline.
			record: func(ctx context.Context) error {
				return m.store.AppendPayment(ctx, o.ID, "", "decline", o.TotalCents, declined)
			}}, nil
	}
	paymentID := uuid.NewString()
	err := m.store.AppendPayment(sctx, o.ID, paymentID, "authorize", o.TotalCents, "")
	span.End()
	if err != nil {
		return nil, nil, err
	}
	done = append(done, Step{Name: "payment", Status: "authorized", At: now(), Detail: "card ending " + last4})

	// inventory: lock, check every line, take (shop.Shortage, inventory's rule).
	sctx, span = m.app.Tel.Step(ctx, "reserve stock", attribute.String("order.id", o.ID))
	want, _ := shop.StockWanted(o.Items)
	skus := make([]string, len(want))
	for i, l := range want {
		skus[i] = l.SKU
	}
	onHand, err := m.store.LockStock(sctx, skus)
	if err != nil {
		span.End()
		return nil, nil, err
	}
	if sku, _, short := shop.Shortage(want, onHand); short {
		observability.StepFailed(sctx, "reserve stock", contracts.ReasonOutOfStock+": "+sku)
		span.End()
		return done, &failure{reason: contracts.ReasonOutOfStock,
			step: Step{Name: "stock", Status: "rejected", At: now(), Detail: contracts.ReasonOutOfStock + ": " + sku}}, nil
	}
	for _, l := range want {
		if err := m.store.Take(sctx, o.ID, l); err != nil {
			span.End()
			return nil, nil, err
		}
	}
	span.End()
	done = append(done, Step{Name: "stock", Status: "reserved", At: now(), Detail: fmt.Sprintf("%d sku(s)", len(want))})

	// shipping: is the country served (shop.ShippingDecision, shipping's rule)?
	sctx, span = m.app.Tel.Step(ctx, "schedule shipment", attribute.String("order.id", o.ID))
	country, unserved := shop.ShippingDecision(o.Address.Country)
	if unserved != "" {
		observability.StepFailed(sctx, "schedule shipment", "failed: "+unserved)
		span.End()
		return done, &failure{reason: contracts.ReasonShippingFailed,
			step: Step{Name: "shipment", Status: "failed", At: now(), Detail: unserved},
			record: func(ctx context.Context) error {
				return m.store.InsertShipment(ctx, o.ID, uuid.NewString(), "failed", country, unserved)
			}}, nil
	}
	err = m.store.InsertShipment(sctx, o.ID, uuid.NewString(), "scheduled", country, "")
	span.End()
	if err != nil {
		return nil, nil, err
	}
	done = append(done, Step{Name: "shipment", Status: "scheduled", At: now(), Detail: country})

	// payments again: capture what was authorized, now that the order will confirm.
	sctx, span = m.app.Tel.Step(ctx, "capture payment", attribute.String("order.id", o.ID))
	err = m.store.AppendPayment(sctx, o.ID, paymentID, "capture", o.TotalCents, "")
	span.End()
	if err != nil {
		return nil, nil, err
	}
	done = append(done, Step{Name: "payment", Status: "captured", At: now()})
	return done, nil, nil
}

// replay answers a request whose Idempotency-Key was seen before (orders' rule).
func (m *Monolith) replay(ctx context.Context, userID, key, hash string) (string, error) {
	h, id, err := m.store.Key(ctx, userID, key)
	switch {
	case err != nil:
		return "", err
	case h != hash:
		return "", errKeyReused
	}
	return id, nil
}
