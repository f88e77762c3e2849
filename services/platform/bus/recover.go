package bus

import (
	"context"
	"fmt"
	"runtime/debug"
)

// Recover turns a handler panic into an error, so one bad message is retried and then
// dead-lettered instead of crashing the service and being redelivered forever.
func Recover() Middleware {
	return func(next Handler) Handler {
		return func(ctx context.Context, d Delivery) (err error) {
			defer func() {
				if r := recover(); r != nil {
					err = fmt.Errorf("handler panic: %v\n%s", r, debug.Stack())
				}
			}()
			return next(ctx, d)
		}
	}
}
