package main

import (
	"context"
	"fmt"
	"time"
)

// The choreography deadline. In orchestration a step that gets no reply times out and
// is compensated (orchestrator.go). In choreography nobody owns the saga, so nothing
// times out: an order whose next event never comes stays pending with its payment
// authorized or its stock reserved. Since a dependency outage no longer dead-letters
// anything (transient failures are retried until the dependency is back), what is left
// is a message in a DLQ (a bug, a malformed message) or a service that is down.
//
// The lab surfaces such an order rather than compensating it on its own: the step log
// gets a "saga/overdue" step (the order page and the saga timeline show it), a warning
// is logged, and saga_overdue_orders counts them. Compensating from orders would race
// with the message that is merely late: replayed from the DLQ after the fix, it would
// authorize or reserve for a cancelled order, and choreography has no one to undo
// that. Making that safe is orchestration's job; seeing why is the lesson.

const (
	// overdueFactor × saga.step_timeout is the choreography deadline: the three steps
	// (payment, stock, shipping) plus as much again for the events between them.
	overdueFactor = 4
	overdueScan   = 5 * time.Second
	overdueBatch  = 50
)

func (s *Service) overdueAfter() time.Duration {
	return overdueFactor * s.app.Settings.Current().StepTimeout()
}

// watchOverdue marks every choreography order pending past the deadline, once.
func (s *Service) watchOverdue(ctx context.Context) error {
	t := time.NewTicker(overdueScan)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		after := s.overdueAfter()
		detail := fmt.Sprintf("still pending after %s: an event of its saga is missing (look in the DLQs, or for a service that is down); choreography has no timeout", after)
		ids, err := s.store.MarkOverdue(ctx, after, detail, overdueBatch)
		if err != nil {
			if ctx.Err() == nil {
				s.app.Log.WarnContext(ctx, "choreography deadline scan failed; next tick retries", "err", err)
			}
			continue
		}
		for _, id := range ids {
			s.app.Log.WarnContext(ctx, "choreography saga overdue", "order_id", id, "pending_for_more_than", after.String())
		}
	}
}

// instrumentOverdue exports saga_overdue_orders, read at scrape time.
func (s *Service) instrumentOverdue() {
	s.app.Tel.GaugeFunc(2*time.Second, func(ctx context.Context) (map[string]float64, error) {
		n, err := s.store.Overdue(ctx, s.overdueAfter())
		return map[string]float64{"saga_overdue_orders": float64(n)}, err
	}, map[string]string{
		"saga_overdue_orders": "Choreography orders pending longer than the saga deadline (4 × saga.step_timeout).",
	})
}
