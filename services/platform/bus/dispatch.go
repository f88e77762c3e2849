package bus

import (
	"context"
	"fmt"

	"microlab/services/contracts"
)

// Routes maps a message type to its handler.
type Routes map[string]Handler

// Dispatch returns a handler that routes by message type. A message of a type nobody
// handles is malformed for this queue (it should never have been bound here).
func Dispatch(routes Routes) Handler {
	return func(ctx context.Context, d Delivery) error {
		t := d.Type
		if t == "" {
			env, err := d.Envelope()
			if err != nil {
				return err
			}
			t = env.EventType
		}
		h, ok := routes[t]
		if !ok {
			return fmt.Errorf("%w: no handler for %q", contracts.ErrMalformed, t)
		}
		return h(ctx, d)
	}
}

// Typed adapts a handler of one payload type: it decodes the envelope and its data, so
// a handler starts from typed values. A message that does not decode is an error
// wrapping contracts.ErrMalformed (retried, then dead-lettered).
func Typed[T any](h func(ctx context.Context, env contracts.Envelope, data T) error) Handler {
	return func(ctx context.Context, d Delivery) error {
		env, err := d.Envelope()
		if err != nil {
			return err
		}
		var data T
		if err := env.DecodeData(&data); err != nil {
			return err
		}
		return h(ctx, env, data)
	}
}
