package main

import (
	"context"
	"fmt"

	"go.opentelemetry.io/otel/attribute"

	"microlab/observability"
	"microlab/services/contracts"
	"microlab/services/platform/app"
	"microlab/services/shop"
)

// Service holds inventory's rules.
type Service struct {
	app   *app.App
	store *Store
}

// Rejection reasons (stock.rejected) besides contracts.ReasonOutOfStock.
const (
	// reasonUnknownSKU: a line names a product inventory does not stock. orders checks
	// SKUs against the catalog, so this only happens when the two disagree.
	reasonUnknownSKU = "unknown_sku"
	// reasonAlreadyReleased: the order's stock was already released (see the releases
	// tombstones): the orchestrator gave up on the order before this reserve arrived.
	reasonAlreadyReleased = "already_released"
)

// want is the stock one order asks for: quantities summed per SKU, sorted by SKU (the
// order in which stock rows are locked, see Store.LockStock). The rule is shop's
// (shop.StockWanted), shared with the monolith.
func want(items []contracts.Item) ([]Line, error) {
	lines, ok := shop.StockWanted(items)
	if !ok {
		return nil, fmt.Errorf("%w: %d item(s), an empty sku or a quantity below 1", contracts.ErrMalformed, len(items))
	}
	return toLines(lines), nil
}

func sortedLines(qty map[string]int) []Line { return toLines(shop.SortedStock(qty)) }

func toLines(in []shop.StockLine) []Line {
	out := make([]Line, len(in))
	for i, l := range in {
		out[i] = Line{SKU: l.SKU, Qty: l.Qty}
	}
	return out
}

// reserve takes every line of a checkout out of stock, or none: it emits stock.reserved
// (carrying the checkout on to shipping) or stock.rejected, in the caller's transaction.
//
// Check-then-decrement is only safe because the stock rows are locked first (SELECT ...
// FOR UPDATE): two checkouts of the last unit would otherwise both see it available, and
// one of the decrements would be a lost update (or, here, a CHECK violation). Every
// reservation locks its rows in SKU order, so two checkouts of the same products wait
// for each other instead of deadlocking.
//
// There is no check for an earlier reservation of the same order: with the inbox off a
// duplicate reserve takes the stock twice, which is what the lab shows.
func (s *Service) reserve(ctx context.Context, causation string, c contracts.Checkout) error {
	lines, err := want(c.Items)
	if err != nil {
		return err
	}
	released, err := s.store.LockReleased(ctx, c.OrderID)
	if err != nil {
		return err
	}
	if released {
		return s.reject(ctx, causation, c.Saga, "", reasonAlreadyReleased)
	}
	skus := make([]string, len(lines))
	for i, l := range lines {
		skus[i] = l.SKU
	}
	onHand, err := s.store.LockStock(ctx, skus)
	if err != nil {
		return err
	}
	wanted := make([]shop.StockLine, len(lines))
	for i, l := range lines {
		wanted[i] = shop.StockLine{SKU: l.SKU, Qty: l.Qty}
	}
	if sku, unknown, short := shop.Shortage(wanted, onHand); short {
		if unknown {
			return s.reject(ctx, causation, c.Saga, sku, reasonUnknownSKU)
		}
		observability.StepFailed(ctx, "reserve stock", contracts.ReasonOutOfStock+": "+sku)
		return s.reject(ctx, causation, c.Saga, sku, contracts.ReasonOutOfStock)
	}
	for _, l := range lines {
		if err := s.store.Take(ctx, c.OrderID, l); err != nil {
			return err
		}
	}
	s.app.Log.InfoContext(ctx, "stock reserved", "order_id", c.OrderID, "lines", len(lines))
	return s.emit(ctx, contracts.StockReserved, c.OrderID, causation, contracts.StockReservedData{Checkout: c})
}

// reject emits stock.rejected; nothing was taken from stock.
func (s *Service) reject(ctx context.Context, causation string, saga contracts.Saga, sku, reason string) error {
	s.app.Log.InfoContext(ctx, "stock rejected", "order_id", saga.OrderID, "sku", sku, "reason", reason)
	return s.emit(ctx, contracts.StockRejected, saga.OrderID, causation,
		contracts.StockRejectedData{Saga: saga, SKU: sku, Reason: reason})
}

// release puts every line still reserved for an order back in stock, records the
// order's tombstone and emits stock.released. Releasing twice returns nothing the second
// time (only 'reserved' lines move), and releasing before anything was reserved still
// answers stock.released so the saga can finish, leaving the tombstone that turns a late
// reserve into a rejection.
func (s *Service) release(ctx context.Context, causation string, saga contracts.Saga, reason string) (err error) {
	// A compensation: its own span, so the waterfall says what the saga undid and why.
	ctx, span := s.app.Tel.Step(ctx, "compensate: release stock", attribute.String("saga.compensation.reason", reason))
	defer func() { observability.Fail(span, err); span.End() }()
	if err := s.store.LockOrder(ctx, saga.OrderID); err != nil {
		return err
	}
	taken, err := s.store.MarkReleased(ctx, saga.OrderID)
	if err != nil {
		return err
	}
	qty := map[string]int{}
	for _, l := range taken {
		qty[l.SKU] += l.Qty
	}
	lines := sortedLines(qty)
	if len(lines) > 0 {
		skus := make([]string, len(lines))
		for i, l := range lines {
			skus[i] = l.SKU
		}
		// Same locks, same order as reserve: see reserve.
		if _, err := s.store.LockStock(ctx, skus); err != nil {
			return err
		}
		for _, l := range lines {
			if err := s.store.Return(ctx, l); err != nil {
				return err
			}
		}
	}
	if err := s.store.Tombstone(ctx, saga.OrderID, reason); err != nil {
		return err
	}
	if len(lines) == 0 {
		s.app.Log.InfoContext(ctx, "release with nothing reserved: tombstone recorded, a late reserve will be rejected",
			"order_id", saga.OrderID, "reason", reason)
	} else {
		s.app.Log.InfoContext(ctx, "stock released", "order_id", saga.OrderID, "lines", len(lines), "reason", reason)
	}
	return s.emit(ctx, contracts.StockReleased, saga.OrderID, causation,
		contracts.StockReleasedData{Saga: saga, Reason: reason})
}

// emit records an outgoing event in the handler's transaction (outbox). The correlation
// id of everything in a checkout is the order id.
func (s *Service) emit(ctx context.Context, typ, orderID, causation string, data any) error {
	env, err := contracts.NewEnvelope(typ, "inventory", orderID, causation, data)
	if err != nil {
		return err
	}
	return s.app.Emit(ctx, env)
}
