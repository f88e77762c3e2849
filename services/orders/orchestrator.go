package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"microlab/services/contracts"
	"microlab/services/orders/saga"
	"microlab/services/platform/pg"
)

// The orchestrator: package saga decides, this file carries the decisions out. Every
// step — a reply, or a deadline passing — runs in one transaction that locks the saga
// row, stores the new state, logs the steps and writes the commands to the outbox. Kill
// the process at any point and the transaction either happened or did not; nothing is
// kept in memory between steps, so any orders instance can take the next one.

// Timeout scanner settings.
const (
	scanInterval = 500 * time.Millisecond
	scanBatch    = 50
)

// orchestrate applies a reply to its order's saga, in the handler's transaction.
func (s *Service) orchestrate(ctx context.Context, env contracts.Envelope, o Order, r reply) error {
	name, status := step(env.EventType)
	detail := r.detail(env.EventType)
	// FOR UPDATE: one step at a time per saga. A second reply for the same order (on
	// another worker or instance) waits here, then sees the state this one leaves.
	row, err := s.store.LockSaga(ctx, o.ID)
	if errors.Is(err, errNotFound) {
		s.app.Log.WarnContext(ctx, "reply for an orchestrated order without a saga; recorded only", "order_id", o.ID, "type", env.EventType)
		return s.store.AddStepAt(ctx, o.ID, name, status, joinDetail(detail, "ignored: no saga"), env.OccurredAt)
	}
	if err != nil {
		return err
	}
	res := saga.Transition(row.Saga, env.EventType)
	if res.Ignored {
		// Late (the step already timed out and is being compensated) or duplicated (the
		// same reply sent twice under different ids): it is part of the story, so it is
		// logged, but it moves nothing.
		s.app.Log.InfoContext(ctx, "reply does not fit the saga's state; ignored", "order_id", o.ID,
			"type", env.EventType, "state", row.Saga.State)
		return s.store.AddStepAt(ctx, o.ID, name, status,
			joinDetail(detail, fmt.Sprintf("ignored: not expected while %s", row.Saga.State)), env.OccurredAt)
	}
	if err := s.store.AddStepAt(ctx, o.ID, name, status, detail, env.OccurredAt); err != nil {
		return err
	}
	attempts := 0
	if res.Saga.State == row.Saga.State {
		attempts = row.Attempts // a compensation half answered: same state, same count
	}
	return s.advance(ctx, o, row.Saga, res, attempts, env.EventID, "")
}

// advance stores a transition's result and carries it out: the commands, and the order's
// final transition when the saga ended. The new state gets a fresh deadline.
func (s *Service) advance(ctx context.Context, o Order, from saga.Saga, res saga.Result, attempts int, causation, note string) error {
	if err := s.store.UpdateSaga(ctx, o.ID, res.Saga, attempts, s.app.Settings.Current().StepTimeout()); err != nil {
		return err
	}
	if res.Saga.State != from.State {
		s.app.Log.InfoContext(ctx, "saga moved", "order_id", o.ID, "from", from.State, "to", res.Saga.State,
			"reason", res.Saga.Reason, "awaiting", res.Saga.Awaiting)
	}
	for _, c := range res.Commands {
		if err := s.send(ctx, o, "", c, causation, note); err != nil {
			return err
		}
	}
	if !res.Ended {
		return nil
	}
	status := statusCancelled
	if res.Saga.State == saga.Confirmed {
		status = statusConfirmed
	}
	return s.finish(ctx, o, status, res.Saga.Reason, causation)
}

// watchTimeouts is the timeout scanner: every scanInterval it takes the sagas whose
// step is overdue and applies the timeout transition to each.
func (s *Service) watchTimeouts(ctx context.Context) error {
	t := time.NewTicker(scanInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		for {
			n, err := s.expire(ctx)
			if err != nil {
				if ctx.Err() == nil {
					s.app.Log.WarnContext(ctx, "saga timeout scan failed; next tick retries", "err", err)
				}
				break
			}
			if n < scanBatch {
				break // caught up
			}
		}
	}
}

// expire handles one batch of overdue sagas in one transaction and reports how many.
func (s *Service) expire(ctx context.Context) (int, error) {
	var n int
	err := pg.InTx(ctx, s.app.DB, func(ctx context.Context) error {
		due, err := s.store.DueSagas(ctx, scanBatch)
		if err != nil {
			return err
		}
		n = len(due)
		for _, row := range due {
			if err := s.timeout(ctx, row); err != nil {
				return fmt.Errorf("saga %s: %w", row.OrderID, err)
			}
		}
		return nil
	})
	return n, err
}

// timeoutStep names the step whose reply did not come, as logged: payment/timed_out.
func timeoutStep(st saga.State) string {
	switch st {
	case saga.Authorizing, saga.Refunding:
		return "payment"
	case saga.Reserving:
		return "stock"
	case saga.Scheduling:
		return "shipment"
	}
	return "compensation"
}

// timeout applies "no reply before the deadline" to one locked saga.
func (s *Service) timeout(ctx context.Context, row SagaRow) error {
	o, err := s.store.Get(ctx, row.OrderID)
	if err != nil {
		return err
	}
	res := saga.Timeout(row.Saga)
	if res.Ignored {
		return nil // final: the query excludes these, but a final saga waits for nothing
	}
	limit := s.app.Settings.Current().StepTimeout()
	var detail, note string
	attempts := 0
	if res.Saga.State == row.Saga.State {
		// A compensation went unanswered: send it again (refunds and releases are safe
		// to repeat) and keep waiting.
		attempts = row.Attempts + 1
		note = fmt.Sprintf("re-sent, attempt %d", attempts+1)
		detail = fmt.Sprintf("no reply within %s; still awaiting %v; %s", limit, row.Saga.Awaiting, note)
	} else {
		detail = fmt.Sprintf("no reply within %s while %s; compensating", limit, row.Saga.State)
	}
	s.app.Log.WarnContext(ctx, "saga step timed out", "order_id", o.ID, "state", row.Saga.State,
		"next", res.Saga.State, "attempts", attempts, "timeout", limit.String())
	if err := s.store.AddStep(ctx, o.ID, timeoutStep(row.Saga.State), "timed_out", detail); err != nil {
		return err
	}
	// No message caused these commands (the clock did): causation is empty.
	return s.advance(ctx, o, row.Saga, res, attempts, "", note)
}
