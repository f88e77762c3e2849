package loadgen

import (
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Outcome is what an order is placed to end as: each of the saga's four endings.
type Outcome string

// The four outcomes, in the order the mix and the summary list them.
const (
	OK       Outcome = "ok"       // confirmed
	Declined Outcome = "declined" // payment declined (card 4000 0000 0000 0002)
	OOS      Outcome = "oos"      // out of stock (LAB-UNICORN, never in stock)
	XX       Outcome = "xx"       // shipping impossible (country XX), after payment and stock
)

// Outcomes lists every outcome.
var Outcomes = []Outcome{OK, Declined, OOS, XX}

// Expected is the final status and cancel reason an order of this outcome must reach.
func (o Outcome) Expected() (status, reason string) {
	switch o {
	case Declined:
		return "cancelled", "payment_declined"
	case OOS:
		return "cancelled", "out_of_stock"
	case XX:
		return "cancelled", "shipping_failed"
	default:
		return "confirmed", ""
	}
}

// Mix weighs the outcomes: ok=80,declined=10,oos=5,xx=5 places 80 % of orders to be
// confirmed and 20 % to fail in each of the saga's ways.
type Mix map[Outcome]int

// DefaultMix is most orders succeeding and a few failing each way.
var DefaultMix = Mix{OK: 80, Declined: 10, OOS: 5, XX: 5}

// ParseMix reads "ok=80,declined=10,oos=5,xx=5". Outcomes left out weigh 0; at least one
// must weigh more than 0.
func ParseMix(s string) (Mix, error) {
	m := Mix{}
	total := 0
	for part := range strings.SplitSeq(s, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			return nil, fmt.Errorf("mix %q: want outcome=weight pairs such as ok=80,declined=10,oos=5,xx=5", s)
		}
		o := Outcome(strings.TrimSpace(k))
		if !o.valid() {
			return nil, fmt.Errorf("mix: unknown outcome %q (want ok, declined, oos or xx)", k)
		}
		if _, dup := m[o]; dup {
			return nil, fmt.Errorf("mix: %s given twice", o)
		}
		n, err := strconv.Atoi(strings.TrimSpace(v))
		if err != nil || n < 0 || n > 1000 {
			return nil, fmt.Errorf("mix: %s=%s: want a whole number from 0 to 1000", o, v)
		}
		m[o] = n
		total += n
	}
	if total == 0 {
		return nil, fmt.Errorf("mix %q: every weight is 0", s)
	}
	return m, nil
}

func (o Outcome) valid() bool {
	for _, x := range Outcomes {
		if o == x {
			return true
		}
	}
	return false
}

// String is the mix as ParseMix reads it.
func (m Mix) String() string {
	var parts []string
	for _, o := range Outcomes {
		if m[o] > 0 {
			parts = append(parts, fmt.Sprintf("%s=%d", o, m[o]))
		}
	}
	return strings.Join(parts, ",")
}

// picker deals outcomes in the mix's proportions, evenly spread and the same every
// run (smooth weighted round robin): after n orders each outcome has its share of n
// within one, so a short run places every outcome and two runs place the same orders.
type picker struct {
	mu    sync.Mutex
	mix   Mix
	total int
	cur   map[Outcome]int
}

func newPicker(m Mix) *picker {
	p := &picker{mix: m, cur: map[Outcome]int{}}
	for _, o := range Outcomes {
		p.total += m[o]
	}
	return p
}

func (p *picker) next() Outcome {
	p.mu.Lock()
	defer p.mu.Unlock()
	best := Outcome("")
	for _, o := range Outcomes {
		if p.mix[o] == 0 {
			continue
		}
		p.cur[o] += p.mix[o]
		if best == "" || p.cur[o] > p.cur[best] {
			best = o
		}
	}
	p.cur[best] -= p.total
	return best
}

// MaxRate bounds --rate: far above what one machine's lab holds, low enough that a typo
// (50000/s) is refused instead of opening tens of thousands of connections.
const MaxRate = 2000

// MaxDuration bounds --duration: load stops by itself.
const MaxDuration = 2 * time.Hour

// ParseRate reads a rate of orders: "50/s", "50", "600/m".
func ParseRate(s string) (float64, error) {
	num, unit, _ := strings.Cut(strings.TrimSpace(s), "/")
	per := 1.0
	switch unit {
	case "", "s":
	case "m", "min":
		per = 60
	default:
		return 0, fmt.Errorf("rate %q: want orders per second (50/s) or per minute (600/m)", s)
	}
	n, err := strconv.ParseFloat(num, 64)
	if err != nil || !(n > 0) || n/per > MaxRate { // !(n > 0): NaN too
		return 0, fmt.Errorf("rate %q: want more than 0 and at most %d/s", s, MaxRate)
	}
	return n / per, nil
}
