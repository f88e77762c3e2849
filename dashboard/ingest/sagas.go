package ingest

import (
	"encoding/json"
	"sync"

	"microlab/services/contracts"
)

// Saga outcomes.
const (
	OutcomePending   = "pending"
	OutcomeConfirmed = "confirmed"
	OutcomeCancelled = "cancelled"
)

// MaxSagaSteps bounds one saga's timeline. A checkout has about ten steps; the bound
// only matters if something keeps publishing under one order id (a replay loop).
const MaxSagaSteps = 64

// MaxSagaText bounds every string a saga keeps (ids, types, reasons): they come from
// message payloads, which may be as long as their sender likes. Longer ones are cut and
// marked (TruncatedMarker), so the store stays under MaxSagas × MaxSagaSteps steps of
// a few hundred bytes (an order id is 36, a reason a few words).
const MaxSagaText = 256

// Sagas derives each checkout's timeline from the wiretap's events and keeps the most
// recent ones: at most max sagas, the one started first evicted first. Safe for
// concurrent use.
type Sagas struct {
	max int

	mu   sync.Mutex
	byID map[string]*sagaEntry
	ring []string // order ids in first-seen order, oldest at head once full
	head int
}

type sagaEntry struct {
	saga Saga
	seen map[string]bool // event ids applied, so a replayed message is not a new step
}

// NewSagas returns a store of at most size sagas (at least 1).
func NewSagas(size int) *Sagas {
	size = max(size, 1)
	return &Sagas{max: size, byID: make(map[string]*sagaEntry, size), ring: make([]string, 0, size)}
}

var (
	failedSteps = map[string]bool{
		contracts.PaymentDeclined: true, contracts.StockRejected: true, contracts.ShipmentFailed: true,
	}
	compensationSteps = map[string]bool{
		contracts.CmdPaymentsRefund: true, contracts.PaymentRefunded: true,
		contracts.CmdInventoryRelease: true, contracts.StockReleased: true,
	}
)

// sagaFields are the fields of a checkout payload the timeline needs (contracts.Saga
// plus the reason failures, compensations and cancellations carry).
type sagaFields struct {
	OrderID  string `json:"orderId"`
	SagaMode string `json:"sagaMode"`
	Reason   string `json:"reason"`
}

// Apply adds e to its order's saga and returns the saga as updated, or false when e is
// not part of a checkout. An event belongs to a checkout when its payload carries a saga
// mode (every checkout message does: contracts.Saga) or it is order.placed; the order
// is the payload's orderId, else the correlation id. Another event (notification.sent)
// joins a saga already known under its order or correlation id. Steps stay in arrival
// order; an event id already applied is ignored (the saga is returned unchanged).
func (s *Sagas) Apply(e Event) (Saga, bool) {
	var p sagaFields
	_ = json.Unmarshal(e.Payload, &p) // a payload of another shape just has no saga fields
	for _, v := range []*string{&p.OrderID, &p.SagaMode, &p.Reason, &e.ID, &e.CorrelationID, &e.Type, &e.Source, &e.TraceID} {
		*v, _ = clip(*v, MaxSagaText)
	}
	orderID := p.OrderID
	if orderID == "" {
		orderID = e.CorrelationID
	}
	if orderID == "" {
		return Saga{}, false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	en, ok := s.byID[orderID]
	if !ok {
		if p.SagaMode == "" && e.Type != contracts.OrderPlaced {
			return Saga{}, false
		}
		en = s.newEntry(orderID, e)
	}
	sg := &en.saga
	if e.ID != "" && en.seen[e.ID] {
		return copySaga(*sg), true
	}
	if sg.Mode == "" {
		sg.Mode = p.SagaMode
	}
	if sg.TraceID == "" || (e.Type == contracts.OrderPlaced && e.TraceID != "") {
		sg.TraceID = e.TraceID
	}
	if e.Type == contracts.OrderPlaced && !e.At.IsZero() && !e.At.Equal(sg.Start) {
		// The saga starts when the order is placed, even if that event came in late.
		sg.Start = e.At
		for i := range sg.Steps {
			sg.Steps[i].Since = sg.Steps[i].At.Sub(sg.Start)
		}
	}
	step := SagaStep{Event: e.Type, Service: e.Source, At: e.At, Since: e.At.Sub(sg.Start),
		Failed: failedSteps[e.Type], Compensation: compensationSteps[e.Type]}
	if step.Failed || step.Compensation {
		step.Reason = p.Reason
	}
	switch e.Type {
	case contracts.OrderConfirmed:
		sg.Outcome, sg.Reason = OutcomeConfirmed, ""
	case contracts.OrderCancelled:
		sg.Outcome, sg.Reason = OutcomeCancelled, p.Reason
		step.Reason = p.Reason
	}
	if len(sg.Steps) < MaxSagaSteps { // seen grows with Steps, so it is bounded too
		sg.Steps = append(sg.Steps, step)
		if e.ID != "" {
			en.seen[e.ID] = true
		}
	}
	return copySaga(*sg), true
}

// newEntry registers a saga, evicting the one seen first when full.
func (s *Sagas) newEntry(orderID string, first Event) *sagaEntry {
	en := &sagaEntry{
		saga: Saga{OrderID: orderID, Outcome: OutcomePending, Start: first.At},
		seen: map[string]bool{},
	}
	if len(s.ring) < s.max {
		s.ring = append(s.ring, orderID)
	} else {
		delete(s.byID, s.ring[s.head])
		s.ring[s.head] = orderID
		s.head = (s.head + 1) % s.max
	}
	s.byID[orderID] = en
	return en
}

func copySaga(sg Saga) Saga {
	sg.Steps = append([]SagaStep(nil), sg.Steps...)
	return sg
}

// List returns up to n sagas (n ≤ 0: all held), the most recently started first,
// filtered by outcome (pending, confirmed, cancelled) and mode when they are not empty.
func (s *Sagas) List(n int, outcome, mode string) []Saga {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Saga
	for i := len(s.ring) - 1; i >= 0; i-- {
		en := s.byID[s.ring[(s.head+i)%len(s.ring)]]
		if en == nil ||
			(outcome != "" && en.saga.Outcome != outcome) ||
			(mode != "" && en.saga.Mode != mode) {
			continue
		}
		out = append(out, copySaga(en.saga))
		if n > 0 && len(out) == n {
			break
		}
	}
	return out
}

// Get returns one order's saga.
func (s *Sagas) Get(orderID string) (Saga, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	en, ok := s.byID[orderID]
	if !ok {
		return Saga{}, false
	}
	return copySaga(en.saga), true
}

// Len is the number of sagas held.
func (s *Sagas) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.byID)
}
