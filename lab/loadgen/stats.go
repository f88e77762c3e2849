package loadgen

import (
	"fmt"
	"io"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"
)

// stats are a run's counters and latencies, updated by every order's goroutine.
type stats struct {
	scheduled, skipped      atomic.Int64
	browses, browseErrors   atomic.Int64
	polls, followErrors     atomic.Int64
	placedN, inFlight       atomic.Int64
	mu                      sync.Mutex
	placeLat, sagaLat       []time.Duration // every placement and every finished saga
	rejected                map[int]int64   // placement answered with this status (0: no answer)
	ends                    map[Outcome]*End
	orders                  []Placed
	index                   map[string]int // order id → its place in orders
	unfinishedN, finishedN  int64
	lastPlaced, lastWindowT int64 // for the achieved rate of the last second
}

func (s *stats) init() {
	s.rejected = map[int]int64{}
	s.ends = map[Outcome]*End{}
	s.index = map[string]int{}
	for _, o := range Outcomes {
		s.ends[o] = &End{Outcome: o, Got: map[string]int64{}}
	}
}

// Placed is one order the gateway accepted (202), with how it was meant to end.
type Placed struct {
	ID      string  `json:"id"`
	TraceID string  `json:"traceId,omitempty"` // the checkout's trace (202's traceId)
	Outcome Outcome `json:"outcome"`
	Status  string  `json:"status"` // its final status as followed ("" while pending or unfinished)
	Reason  string  `json:"reason"`
	// When the gateway's 202 arrived, how long the placement took (POST → 202) and how
	// long the saga took by the shop's clock (0 until final): lab bench holds each order
	// to a deadline and times the trace's way to the dashboard from the 202.
	PlacedAt  time.Time     `json:"placedAt"`
	Placement time.Duration `json:"placementNs"`
	Saga      time.Duration `json:"sagaNs,omitempty"`
}

// End is how the orders placed for one outcome ended.
type End struct {
	Outcome  Outcome          `json:"outcome"`
	Placed   int64            `json:"placed"`
	Expected int64            `json:"expected"`  // ended as the outcome says
	Got      map[string]int64 `json:"otherwise"` // ended otherwise: "cancelled/out_of_stock" → count
}

func (s *stats) placement(d time.Duration, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		s.rejected[StatusOf(err)]++
		return
	}
	s.placeLat = append(s.placeLat, d)
}

func (s *stats) placedOrder(id, traceID string, o Outcome, at time.Time, took time.Duration) {
	s.placedN.Add(1)
	s.inFlight.Add(1)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ends[o].Placed++
	s.index[id] = len(s.orders)
	s.orders = append(s.orders, Placed{ID: id, TraceID: traceID, Outcome: o, PlacedAt: at, Placement: took})
}

func (s *stats) final(id string, want Outcome, o order) {
	s.inFlight.Add(-1)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.finishedN++
	saga := o.sagaTime()
	s.sagaLat = append(s.sagaLat, saga)
	status, reason := want.Expected()
	e := s.ends[want]
	if o.Status == status && o.CancelReason == reason {
		e.Expected++
	} else {
		e.Got[o.Status+"/"+o.CancelReason]++
	}
	s.setEnd(id, o.Status, o.CancelReason)
	if i, ok := s.index[id]; ok {
		s.orders[i].Saga = saga
	}
}

func (s *stats) unfinished(id string) {
	s.inFlight.Add(-1)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.unfinishedN++
	s.setEnd(id, "", "")
}

// setEnd records an order's final status (s.mu held).
func (s *stats) setEnd(id, status, reason string) {
	if i, ok := s.index[id]; ok {
		s.orders[i].Status, s.orders[i].Reason = status, reason
	}
}

func (s *stats) browsed(err error) {
	s.browses.Add(1)
	if err != nil {
		s.browseErrors.Add(1)
	}
}

// Latency is the percentiles of one kind of latency.
type Latency struct {
	N   int           `json:"n"`
	P50 time.Duration `json:"p50Ns"`
	P95 time.Duration `json:"p95Ns"`
	P99 time.Duration `json:"p99Ns"`
	Max time.Duration `json:"maxNs"`
}

func percentiles(ds []time.Duration) Latency {
	if len(ds) == 0 {
		return Latency{}
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	at := func(q float64) time.Duration { return s[min(len(s)-1, int(q*float64(len(s))))] }
	return Latency{N: len(s), P50: at(.50), P95: at(.95), P99: at(.99), Max: s[len(s)-1]}
}

func (l Latency) String() string {
	if l.N == 0 {
		return "-"
	}
	return fmt.Sprintf("%s/%s/%s", ms(l.P50), ms(l.P95), ms(l.P99))
}

func ms(d time.Duration) string {
	switch {
	case d >= 10*time.Second:
		return fmt.Sprintf("%.0fs", d.Seconds())
	case d >= time.Second:
		return fmt.Sprintf("%.1fs", d.Seconds())
	default:
		return fmt.Sprintf("%dms", d.Milliseconds())
	}
}

// Progress is the run so far.
type Progress struct {
	Phase      string        `json:"phase"` // "preparing", "running", "draining" (placing is over), "done"
	Ready      int           `json:"ready"` // preparing: shoppers logged in, of Shoppers
	Shoppers   int           `json:"shoppers"`
	Elapsed    time.Duration `json:"elapsedNs"`
	Target     float64       `json:"target"`   // orders/s asked for
	Achieved   float64       `json:"achieved"` // orders/s placed: in the last second; at the end, over the run
	Scheduled  int64         `json:"scheduled"`
	Placed     int64         `json:"placed"`     // accepted (202)
	Rejected   int64         `json:"rejected"`   // refused or unanswered
	Skipped    int64         `json:"skipped"`    // not sent: MaxInFlight orders were already in flight
	InFlight   int64         `json:"inFlight"`   // placed, not yet final
	Finished   int64         `json:"finished"`   // final (as expected or not)
	Unexpected int64         `json:"unexpected"` // final, but not as the mix meant
	Unfinished int64         `json:"unfinished"` // not final within Follow
	Placement  Latency       `json:"placement"`
	Saga       Latency       `json:"saga"`
	Done       bool          `json:"done"`
}

// Line is the progress as one line for a terminal.
func (p Progress) Line() string {
	if p.Phase == "preparing" {
		return fmt.Sprintf("preparing: %d/%d shoppers logged in", p.Ready, p.Shoppers)
	}
	line := fmt.Sprintf("%5.0fs %-8s %6.1f/s of %g/s  in flight %4d  placed %6d  final %6d  place p50/95/99 %s  saga %s",
		p.Elapsed.Seconds(), p.Phase, p.Achieved, p.Target, p.InFlight, p.Placed, p.Finished, p.Placement, p.Saga)
	var bad []string
	if p.Rejected > 0 {
		bad = append(bad, fmt.Sprintf("%d refused", p.Rejected))
	}
	if p.Skipped > 0 {
		bad = append(bad, fmt.Sprintf("%d skipped", p.Skipped))
	}
	if p.Unexpected > 0 {
		bad = append(bad, fmt.Sprintf("%d unexpected", p.Unexpected))
	}
	if p.Unfinished > 0 {
		bad = append(bad, fmt.Sprintf("%d unfinished", p.Unfinished))
	}
	if len(bad) > 0 {
		line += "  (" + strings.Join(bad, ", ") + ")"
	}
	return line
}

func (r *run) progress(done bool) Progress {
	s := &r.stats
	elapsed := time.Since(r.start)
	phase := "running"
	if elapsed >= r.placingFor() {
		phase = "draining"
	}
	if done {
		phase = "done"
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var rejected int64
	for _, n := range s.rejected {
		rejected += n
	}
	var unexpected int64
	for _, e := range s.ends {
		for _, n := range e.Got {
			unexpected += n
		}
	}
	placed := s.placedN.Load()
	now := elapsed.Nanoseconds()
	achieved := 0.0
	if dt := now - s.lastWindowT; dt > 0 && !done {
		achieved = float64(placed-s.lastPlaced) / (float64(dt) / 1e9)
	}
	s.lastPlaced, s.lastWindowT = placed, now
	if done && elapsed > 0 {
		achieved = float64(placed) / min(elapsed, r.placingFor()).Seconds()
	}
	return Progress{Phase: phase, Elapsed: elapsed, Target: r.cfg.Rate, Achieved: achieved,
		Scheduled: s.scheduled.Load(), Placed: placed, Rejected: rejected, Skipped: s.skipped.Load(),
		InFlight: s.inFlight.Load(), Finished: s.finishedN, Unexpected: unexpected, Unfinished: s.unfinishedN,
		Placement: percentiles(s.placeLat), Saga: percentiles(s.sagaLat), Done: done}
}

// Summary is a whole run.
type Summary struct {
	Progress
	Gateway     string        `json:"gateway"`
	Mix         Mix           `json:"mix"`
	Duration    time.Duration `json:"durationNs"`
	MaxInFlight int           `json:"maxInFlight"`
	Refused     map[int]int64 `json:"refused"` // placements by answer status (0: no answer: timeout, refused connection)
	Ends        []End         `json:"ends"`    // per outcome, in Outcomes order
	Browses     int64         `json:"browses"`
	BrowseErrs  int64         `json:"browseErrors"`
	Polls       int64         `json:"polls"` // GET /api/v1/orders/{id} while following orders
	PollErrs    int64         `json:"pollErrors"`
	Orders      []Placed      `json:"orders"` // every accepted order, in placement order
}

func (r *run) summary() Summary {
	p := r.progress(true)
	s := &r.stats
	s.mu.Lock()
	defer s.mu.Unlock()
	sum := Summary{Progress: p, Gateway: r.cfg.Gateway, Mix: r.cfg.Mix, Duration: r.placingFor(), MaxInFlight: r.cfg.MaxInFlight,
		Refused: map[int]int64{}, Browses: s.browses.Load(), BrowseErrs: s.browseErrors.Load(),
		Polls: s.polls.Load(), PollErrs: s.followErrors.Load(), Orders: slices.Clone(s.orders)}
	for k, v := range s.rejected {
		sum.Refused[k] = v
	}
	for _, o := range Outcomes {
		e := *s.ends[o]
		e.Got = map[string]int64{}
		for k, v := range s.ends[o].Got {
			e.Got[k] = v
		}
		sum.Ends = append(sum.Ends, e)
	}
	return sum
}

// KeptUp reports whether the shop held the rate: every scheduled order sent and
// accepted, every accepted one final within Follow.
func (s Summary) KeptUp() bool {
	return s.Skipped == 0 && s.Rejected == 0 && s.Unfinished == 0
}

// Table writes the summary for a terminal.
func (s Summary) Table(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "target\t%g orders/s for %s (mix %s) against %s\n", s.Target, s.Duration, s.Mix, s.Gateway)
	fmt.Fprintf(tw, "achieved\t%.1f orders/s placed: %d scheduled, %d placed, %d refused, %d skipped\n",
		s.Achieved, s.Scheduled, s.Placed, s.Rejected, s.Skipped)
	fmt.Fprintf(tw, "placement\tp50 %s  p95 %s  p99 %s  max %s  (POST /api/v1/orders → 202)\n",
		ms(s.Placement.P50), ms(s.Placement.P95), ms(s.Placement.P99), ms(s.Placement.Max))
	fmt.Fprintf(tw, "saga\tp50 %s  p95 %s  p99 %s  max %s  (order/placed → its last step, the shop's clock)\n",
		ms(s.Saga.P50), ms(s.Saga.P95), ms(s.Saga.P99), ms(s.Saga.Max))
	fmt.Fprintf(tw, "reads\t%d browsing requests, %d failed; %d failed polls\n", s.Browses, s.BrowseErrs, s.PollErrs)
	tw.Flush()
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "outcome\tplaced\tas expected\totherwise\t")
	for _, e := range s.Ends {
		var other []string
		keys := make([]string, 0, len(e.Got))
		for k := range e.Got {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			other = append(other, fmt.Sprintf("%s %d", strings.TrimSuffix(k, "/"), e.Got[k]))
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t\n", e.Outcome, e.Placed, e.Expected, strings.Join(other, ", "))
	}
	fmt.Fprintf(tw, "unfinished\t%d\t\t\t\n", s.Unfinished)
	tw.Flush()
	if len(s.Refused) > 0 {
		var parts []string
		for code, n := range s.Refused {
			what := strconv.Itoa(code)
			if code == 0 {
				what = "no answer"
			}
			parts = append(parts, fmt.Sprintf("%s ×%d", what, n))
		}
		sort.Strings(parts)
		fmt.Fprintf(w, "\nrefused placements: %s\n", strings.Join(parts, ", "))
	}
	if !s.KeptUp() {
		fmt.Fprintf(w, "\nthe lab did not keep up with %g orders/s: ", s.Target)
		var why []string
		if s.Skipped > 0 {
			why = append(why, fmt.Sprintf("%d orders were not sent because %d were already in flight", s.Skipped, s.MaxInFlight))
		}
		if s.Rejected > 0 {
			why = append(why, fmt.Sprintf("%d placements were refused or unanswered", s.Rejected))
		}
		if s.Unfinished > 0 {
			why = append(why, fmt.Sprintf("%d orders were not final in time", s.Unfinished))
		}
		fmt.Fprintln(w, strings.Join(why, "; "))
	}
}
