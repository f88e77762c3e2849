package ingest

import "sync"

// MaxEventHeaders is the most headers an event keeps (those of the smallest names);
// the shop's messages carry a handful.
const MaxEventHeaders = 64

// Events is a ring buffer of the most recent messages the wiretap saw, bounded by count
// (once full, each new event evicts the oldest) and by bytes (Budget.Bytes in all, the
// oldest evicted first; no string or payload longer than Budget.ValueBytes: a longer
// payload is replaced by a JSON string of its beginning ending in TruncatedMarker, and
// the event is marked Truncated). Safe for concurrent use. Events are handed out as
// stored: their Headers and Payload are shared and must not be modified.
type Events struct {
	maxBytes int64
	maxValue int

	mu        sync.Mutex
	buf       []Event
	size      []int64 // estimated size of the event in the same slot
	head, n   int     // the oldest event's slot, and how many are held from it
	bytes     int64
	truncated int64
	byID      map[string]int // event id → slot of its latest copy
}

// EventStats is what an Events store holds and has cut.
type EventStats struct {
	Events          int   `json:"events"`          // events held
	Bytes           int64 `json:"bytes"`           // their estimated size in memory
	BudgetBytes     int64 `json:"budgetBytes"`     // the most Bytes may be
	TruncatedEvents int64 `json:"truncatedEvents"` // events stored with something cut
}

// NewEvents returns a ring of size events (at least 1) within the default budget
// (DefaultEventBytes, DefaultEventValueBytes).
func NewEvents(size int) *Events { return NewEventsWithin(size, Budget{}) }

// NewEventsWithin is NewEvents within budget (zero fields take the defaults).
func NewEventsWithin(size int, budget Budget) *Events {
	size = max(size, 1)
	b := budget.withDefaults(DefaultEventBytes, DefaultEventValueBytes)
	return &Events{maxBytes: b.Bytes, maxValue: b.ValueBytes,
		buf: make([]Event, size), size: make([]int64, size), byID: make(map[string]int, size)}
}

// Add stores e, cut to the budget, evicting the oldest events to make room, and returns
// the event as stored (what Recent and Get will hand out).
func (s *Events) Add(e Event) Event {
	payload := e.Payload
	e = s.trim(e)
	size := eventBytes(&e)
	if size > s.maxBytes/4 {
		// Only many long headers (or a payload of escapes) make an event this large
		// once trimmed: it keeps its strings, not its headers nor its payload.
		e.Headers, e.Truncated = nil, true
		if len(payload) > 0 {
			e.Payload = clippedJSON(payload, 0)
		}
		size = eventBytes(&e)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if e.Truncated {
		s.truncated++
	}
	for s.n == len(s.buf) || (s.n > 0 && s.bytes+size > s.maxBytes) {
		s.popOldest()
	}
	slot := (s.head + s.n) % len(s.buf)
	s.buf[slot], s.size[slot] = e, size
	s.n++
	s.bytes += size
	if e.ID != "" {
		s.byID[e.ID] = slot
	}
	return e
}

func (s *Events) popOldest() {
	old := s.buf[s.head]
	if old.ID != "" && s.byID[old.ID] == s.head {
		delete(s.byID, old.ID)
	}
	s.bytes -= s.size[s.head]
	s.buf[s.head], s.size[s.head] = Event{}, 0 // let the payload go
	s.head = (s.head + 1) % len(s.buf)
	s.n--
}

// trim cuts e's strings and headers to maxValue bytes, keeps MaxEventHeaders headers,
// and replaces a payload over maxValue by a JSON string of its beginning and the
// marker (still valid JSON, so the API and the page show it as they show any payload).
// Whatever it cuts is copied: e's maps and slices are not modified.
func (s *Events) trim(e Event) Event {
	var c [10]bool
	e.ID, c[0] = clip(e.ID, s.maxValue)
	e.Type, c[1] = clip(e.Type, s.maxValue)
	e.Source, c[2] = clip(e.Source, s.maxValue)
	e.CorrelationID, c[3] = clip(e.CorrelationID, s.maxValue)
	e.Exchange, c[4] = clip(e.Exchange, s.maxValue)
	e.RoutingKey, c[5] = clip(e.RoutingKey, s.maxValue)
	e.TraceID, c[6] = clip(e.TraceID, s.maxValue)
	e.Headers, c[7] = keepFirst(e.Headers, MaxEventHeaders)
	e.Headers, c[8] = clipMap(e.Headers, s.maxValue)
	if len(e.Payload) > s.maxValue {
		e.Payload, c[9] = clippedJSON(e.Payload, s.maxValue), true
	}
	e.Truncated = e.Truncated || c != [10]bool{}
	return e
}

// Recent returns up to n events (n ≤ 0: all held), newest first; with a correlation id,
// only that conversation's (one checkout's) events.
func (s *Events) Recent(n int, correlationID string) []Event {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Event
	for i := s.n - 1; i >= 0; i-- {
		e := s.buf[(s.head+i)%len(s.buf)]
		if correlationID != "" && e.CorrelationID != correlationID {
			continue
		}
		out = append(out, e)
		if n > 0 && len(out) == n {
			break
		}
	}
	return out
}

// Get returns the event with this id (the latest one, if it was seen more than once).
func (s *Events) Get(id string) (Event, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	i, ok := s.byID[id]
	if !ok {
		return Event{}, false
	}
	return s.buf[i], true
}

// Len is the number of events held.
func (s *Events) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.n
}

// Stats reports what the store holds and what it cut.
func (s *Events) Stats() EventStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return EventStats{Events: s.n, Bytes: s.bytes, BudgetBytes: s.maxBytes, TruncatedEvents: s.truncated}
}
