package ingest

import "sync"

// Events is a ring buffer of the most recent messages the wiretap saw: once full, each
// new event overwrites the oldest. Safe for concurrent use. Events are handed out as
// stored: their Headers and Payload are shared and must not be modified.
type Events struct {
	mu   sync.Mutex
	buf  []Event
	next int // slot the next event goes to
	full bool
	byID map[string]int // event id → slot of its latest copy
}

// NewEvents returns a ring of size events (at least 1).
func NewEvents(size int) *Events {
	size = max(size, 1)
	return &Events{buf: make([]Event, size), byID: make(map[string]int, size)}
}

// Add stores e, evicting the oldest event when the ring is full.
func (s *Events) Add(e Event) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.full {
		if old := s.buf[s.next].ID; old != "" && s.byID[old] == s.next {
			delete(s.byID, old)
		}
	}
	s.buf[s.next] = e
	if e.ID != "" {
		s.byID[e.ID] = s.next
	}
	s.next++
	if s.next == len(s.buf) {
		s.next, s.full = 0, true
	}
}

// Recent returns up to n events (n ≤ 0: all held), newest first; with a correlation id,
// only that conversation's (one checkout's) events.
func (s *Events) Recent(n int, correlationID string) []Event {
	s.mu.Lock()
	defer s.mu.Unlock()
	held := s.next
	if s.full {
		held = len(s.buf)
	}
	var out []Event
	for i := 1; i <= held; i++ {
		e := s.buf[(s.next-i+len(s.buf))%len(s.buf)]
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
	if s.full {
		return len(s.buf)
	}
	return s.next
}
