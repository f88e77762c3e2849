package exercises

import (
	"context"
	"errors"
	"fmt"
	"time"

	"microlab/dashboard/ingest"
	"microlab/services/platform/control"
)

// Lab is the running lab as the engine sees it: the few things it reads and does, each
// declared here by its consumer (the engine), each satisfied by the part the dashboard
// already has. The dashboard builds one Lab and runs the engine; `lab exercise` asks the
// dashboard's API, so both faces share one engine and one record of progress.
//
// Plane and State are required. A nil source makes the checks that need it report what
// is missing ("no Prometheus configured"), never hold; a nil hook makes the actions that
// need it fail with ErrUnavailable.
type Lab struct {
	// Plane changes settings and faults: *control.Plane, the one code path of the
	// switchboard and `lab settings|fault` too. The engine's changes are attributed to
	// "exercise <id>" (Source).
	Plane Switches
	// State reads settings and faults in force: *control.Store (Load).
	State SwitchState

	// Events, Traces and Sagas are what the dashboard ingests: *ingest.Events,
	// *ingest.Traces and *ingest.Sagas satisfy them as they are.
	Events EventSource
	Traces TraceSource
	Sagas  SagaSource

	// Prometheus answers instant PromQL queries (PrometheusAPI is the HTTP one).
	Prometheus Prometheus
	// Shop is the gateway's public API, as a demo user sees it (Gateway).
	Shop Shop

	// Traffic switches the dashboard's steady shop traffic on or off (rate orders/s,
	// mix as loadgen.ParseMix reads it; "" the default mix).
	Traffic func(ctx context.Context, on bool, rate float64, mix string, browse int) error
	// Scale runs service as this many instances (the supervisor's scale).
	Scale func(ctx context.Context, service string, instances int) error
}

// Switches is what changes the lab's switches (*control.Plane satisfies it). Every
// change is validated, stored with its source, put on the timeline and announced.
type Switches interface {
	Set(ctx context.Context, key, value, source string) (control.Change, error)
	AddFault(ctx context.Context, spec control.FaultSpec, source string) (control.Fault, control.Change, error)
	// ClearFaults clears the faults on target: "" every fault, a service (its own and
	// its instances'), or an instance.
	ClearFaults(ctx context.Context, target, source string) ([]control.Change, error)
}

// SwitchState reads the settings (defaults filled in) and the faults in force, in one
// consistent snapshot (*control.Store satisfies it).
type SwitchState interface {
	Load(ctx context.Context) (control.Settings, error)
}

// EventSource is the wiretap's store of recent messages (*ingest.Events).
type EventSource interface {
	// Recent returns up to n events (n ≤ 0: all held), newest first; with a
	// correlation id, only that conversation's.
	Recent(n int, correlationID string) []ingest.Event
}

// TraceSource is the store of received spans (*ingest.Traces).
type TraceSource interface {
	// Summaries returns up to n traces passing f, the most recently first-seen first.
	Summaries(n int, f ingest.Filter) []ingest.TraceSummary
	// Trace returns a trace's spans, by start time; false if not held.
	Trace(id string) ([]ingest.Span, bool)
}

// SagaSource is the store of saga timelines (*ingest.Sagas).
type SagaSource interface {
	// List returns up to n sagas, most recently started first, filtered by outcome and
	// mode when not empty.
	List(n int, outcome, mode string) []ingest.Saga
	Get(orderID string) (ingest.Saga, bool)
}

// Prometheus evaluates an instant query now.
type Prometheus interface {
	Query(ctx context.Context, expr string) ([]Sample, error)
}

// Sample is one series of an instant query's result.
type Sample struct {
	Labels map[string]string `json:"labels"`
	Value  float64           `json:"value"`
}

// Shop is what the engine does and reads through the shop's APIs, as a customer (and,
// for the ledger, as the dashboard does, through payments' internal API).
type Shop interface {
	// PlaceOrder checks out o as a demo user and returns the order id and its trace id.
	PlaceOrder(ctx context.Context, o Order) (orderID, traceID string, err error)
	// GetOrder reads an order as the gateway shows it to its owner.
	GetOrder(ctx context.Context, orderID string) (ShopOrder, error)
	// Ledger reads payments' ledger of an order (zeros for an order payments never saw).
	Ledger(ctx context.Context, orderID string) (Ledger, error)
	// SetPrice changes a product's price on catalog's internal API.
	SetPrice(ctx context.Context, sku string, cents int) error
	// Rebuild rebuilds a projection from orders' event store and returns once the job
	// has completed (an error if it failed or could not start).
	Rebuild(ctx context.Context, projection string) error
}

// ShopOrder is an order as GET /api/v1/orders/{id} answers, as far as checks read it.
type ShopOrder struct {
	OrderID      string      `json:"orderId"`
	Status       string      `json:"status"`
	CancelReason string      `json:"cancelReason"`
	TraceID      string      `json:"traceId"`
	CreatedAt    time.Time   `json:"createdAt"`
	Steps        []OrderStep `json:"steps"`
}

// OrderStep is one entry of an order's step log.
type OrderStep struct {
	Name string    `json:"name"`
	At   time.Time `json:"at"`
}

// Since is when the order last changed (its last step; else when it was created): how
// long it has had its status.
func (o ShopOrder) Since() time.Time {
	t := o.CreatedAt
	for _, s := range o.Steps {
		if s.At.After(t) {
			t = s.At
		}
	}
	return t
}

// Ledger is payments' ledger of one order: rows of each kind (GET /payments/{orderId}).
type Ledger struct {
	Authorizations int `json:"authorizations"`
	Captures       int `json:"captures"`
	Refunds        int `json:"refunds"`
	Declines       int `json:"declines"`
}

// ErrUnavailable: the lab this engine runs in cannot do that (no traffic generator, no
// supervisor to scale, no gateway configured). The API maps it to 503.
var ErrUnavailable = errors.New("not available in this lab")

func unavailable(what string) error { return fmt.Errorf("%s: %w", what, ErrUnavailable) }

// The parts the dashboard has satisfy the seam as they are: a change to either side
// that breaks the fit breaks the build here, not the dashboard's wiring later.
var (
	_ Switches    = (*control.Plane)(nil)
	_ SwitchState = (*control.Store)(nil)
	_ EventSource = (*ingest.Events)(nil)
	_ TraceSource = (*ingest.Traces)(nil)
	_ SagaSource  = (*ingest.Sagas)(nil)
	_ Shop        = (*Gateway)(nil)
	_ Prometheus  = PrometheusAPI{}
)
