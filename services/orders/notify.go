package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"

	"microlab/services/contracts"
)

// Notifier is the client of notifications' POST /notify, called with
// notifications.mode=sync: the confirmation email is then part of confirming an order,
// and the order is only confirmed once notifications has answered — the synchronous
// coupling the lab lets a learner switch on and feel (confirmations are as slow as
// notifications, and stop while it is down). async, the default, leaves it to
// notifications' reaction to order.confirmed.
type Notifier struct {
	base   string
	client *http.Client // bounded per attempt by http.timeout (httpx.Retry)
}

// unavailableError is notifications not answering, or answering 5xx. It is a net.Error
// so that the message pipeline (pg.IsTransient) treats it as a dependency that is
// away for now: the message that was confirming the order is retried, without ever
// being dead-lettered, until notifications is back.
type unavailableError struct{ err error }

func (e *unavailableError) Error() string   { return "notifications unavailable: " + e.err.Error() }
func (e *unavailableError) Unwrap() error   { return e.err }
func (e *unavailableError) Timeout() bool   { return false }
func (e *unavailableError) Temporary() bool { return true }

// Confirmed sends the order's confirmation, idempotent on the order id (notifications
// sends it once however often this is called; hence also the Idempotency-Key, which
// lets httpx.Retry retry the POST).
func (n *Notifier) Confirmed(ctx context.Context, data contracts.OrderConfirmedData) error {
	body, err := json.Marshal(data)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, n.base+"/notify", bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("notify request: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Idempotency-Key", "order-confirmed-"+data.OrderID)
	resp, err := n.client.Do(req)
	if err != nil {
		return &unavailableError{fmt.Errorf("POST /notify for order %s: %w", data.OrderID, err)}
	}
	defer resp.Body.Close()
	snippet, _ := io.ReadAll(io.LimitReader(resp.Body, 200))
	switch {
	case resp.StatusCode >= 500:
		return &unavailableError{fmt.Errorf("POST /notify for order %s: %d %s", data.OrderID, resp.StatusCode, strings.TrimSpace(string(snippet)))}
	case resp.StatusCode >= 300:
		return fmt.Errorf("POST /notify for order %s: %d %s", data.OrderID, resp.StatusCode, strings.TrimSpace(string(snippet)))
	}
	return nil
}
