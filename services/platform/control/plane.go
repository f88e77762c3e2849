package control

import (
	"context"
	"errors"
	"fmt"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"microlab/services/platform/bus"
)

// Plane is the ONE code path every face of the control plane goes through: the
// dashboard's API and switchboard, `go run ./lab settings|fault|reset` and the
// exercises. Each change is validated (an *InvalidError, nothing stored), stored with
// who made it (source: "dashboard", "lab settings", "exercise 07-outbox"), recorded on
// the timeline and announced on lab.control, so every instance applies it at once.
type Plane struct {
	Store *Store
	// Pub announces changes and injects poison messages; nil: changes reach the
	// services at their next periodic re-read (5 s).
	Pub *bus.Publisher
	// Running, if set, reports whether a service (instance "") or an instance is
	// running; a fault on one that is not is refused.
	Running func(service, instance string) bool
	// OnChange, if set, is called with every change once it is stored (the dashboard
	// streams them to the timeline).
	OnChange func(Change)
}

// ErrNotAnnounced means the change is stored but its announcement failed: services pick
// it up at their next re-read. The change happened; callers report it, not fail it.
var ErrNotAnnounced = errors.New("stored, but not announced (running services pick it up within 5 s)")

// Set changes one setting.
func (p *Plane) Set(ctx context.Context, key, value, source string) (Change, error) {
	ch, err := p.Store.Set(ctx, key, value, source)
	if err != nil {
		return Change{}, err
	}
	return ch, p.done(ctx, []Change{ch})
}

// AddFault injects a fault. A poison fault's messages are published here, at once.
func (p *Plane) AddFault(ctx context.Context, spec FaultSpec, source string) (Fault, Change, error) {
	f, err := spec.Validate(time.Now())
	if err != nil {
		return Fault{}, Change{}, Invalid(err)
	}
	if p.Running != nil && !p.Running(f.Service, f.Instance) {
		return Fault{}, Change{}, Invalid(fmt.Errorf("%s is not running: start it (lab up) before injecting a fault", f.Target()))
	}
	if f.Kind == FaultPoison {
		if p.Pub == nil {
			return Fault{}, Change{}, errors.New("poison: no broker connection to inject messages with")
		}
		if err := InjectPoison(ctx, p.Pub, f); err != nil {
			return Fault{}, Change{}, err
		}
	}
	f, ch, err := p.Store.AddFault(ctx, spec, source)
	if err != nil {
		return Fault{}, Change{}, err
	}
	return f, ch, p.done(ctx, []Change{ch})
}

// ClearFaults clears the faults on target ("" all of them).
func (p *Plane) ClearFaults(ctx context.Context, target, source string) ([]Change, error) {
	chs, err := p.Store.ClearFaults(ctx, target, source)
	if err != nil {
		return nil, err
	}
	return chs, p.done(ctx, chs)
}

// RevealFaults shows hidden faults as they are (Store.RevealFaults), announced.
func (p *Plane) RevealFaults(ctx context.Context, ids []int64, source string) ([]Change, error) {
	chs, err := p.Store.RevealFaults(ctx, ids, source)
	if err != nil {
		return nil, err
	}
	return chs, p.done(ctx, chs)
}

// Reset restores every default and clears every fault.
func (p *Plane) Reset(ctx context.Context, source string) ([]Change, error) {
	chs, err := p.Store.Reset(ctx, source)
	if err != nil {
		return nil, err
	}
	return chs, p.done(ctx, chs)
}

// Claim is ClaimFault, announced: a one-shot fault about to fire in instance.
func (p *Plane) Claim(ctx context.Context, f Fault, instance string) error {
	ch, err := p.Store.ClaimFault(ctx, f.ID, instance)
	if err != nil {
		return err
	}
	if err := p.done(ctx, []Change{ch}); err != nil && !errors.Is(err, ErrNotAnnounced) {
		return err
	}
	return nil
}

func (p *Plane) done(ctx context.Context, chs []Change) error {
	if p.OnChange != nil {
		for _, ch := range chs {
			p.OnChange(ch)
		}
	}
	if p.Pub == nil || len(chs) == 0 {
		return nil
	}
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	// One announcement is enough: an instance re-reads everything on any of them.
	if err := Announce(actx, p.Pub, chs[len(chs)-1]); err != nil {
		return fmt.Errorf("%w: %v", ErrNotAnnounced, err)
	}
	return nil
}

// PoisonType is the AMQP type of injected poison messages: no service handles it, and
// the body is not JSON, so each is dead-lettered at its first delivery.
const PoisonType = "lab.poison"

// InjectPoison publishes f.Count() malformed messages straight into f's service queue
// (through the default exchange).
func InjectPoison(ctx context.Context, pub *bus.Publisher, f Fault) error {
	now := time.Now()
	for i := range f.Count() {
		msg := amqp.Publishing{ContentType: "application/json", DeliveryMode: amqp.Persistent, Type: PoisonType,
			MessageId: fmt.Sprintf("poison-%d-%d", now.UnixNano(), i+1), Timestamp: now, AppId: "lab",
			Body: []byte(`{"this is": poison, not JSON`)}
		if err := pub.Publish(ctx, "", f.Service+".events", msg); err != nil {
			return fmt.Errorf("poison %s: %w", f.Service, err)
		}
	}
	return nil
}
