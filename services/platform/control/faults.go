package control

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Fault kinds (DESIGN §7). A fault targets a service, or one instance of it, and expires.
const (
	// FaultLatency adds a delay (Value "300ms" or "300ms±50ms") to HTTP requests and/or
	// message handling (On).
	FaultLatency = "latency"
	// FaultErrorRate answers a fraction (Value "0".."1") of HTTP requests with 500 and
	// fails that fraction of message deliveries (so the broker retries and dead-letters).
	FaultErrorRate = "error_rate"
	// FaultDown answers 503 on everything but /healthz and pauses consumption.
	FaultDown = "down"
	// FaultCrash makes the process exit once; the supervisor (or compose) restarts it.
	FaultCrash = "crash"
	// FaultCrashAfterCommit: the next handler commits its transaction, then the process
	// exits before publishing and acking (what the outbox is for). Fires once.
	FaultCrashAfterCommit = "crash_after_commit"
	// FaultDuplicateDelivery: the next Value messages the service publishes go out twice
	// with the same id.
	FaultDuplicateDelivery = "duplicate_delivery"
	// FaultPoison: Value malformed messages injected into the service's queue (by the
	// control plane, at once); only a service with a queue (QueueServices) has one.
	FaultPoison = "poison"
)

// Where latency and error_rate act (Fault.On).
const (
	OnBoth     = "both"
	OnHTTP     = "http"
	OnMessages = "messages"
)

// Fault expiry: a forgotten fault never sticks.
const (
	DefaultFaultFor = 10 * time.Minute
	MaxFaultFor     = time.Hour
)

// FaultKinds lists every kind, in the order people read them.
var FaultKinds = []string{FaultLatency, FaultErrorRate, FaultDown, FaultCrash, FaultCrashAfterCommit,
	FaultDuplicateDelivery, FaultPoison}

// FaultServices are the services faults can target.
var FaultServices = []string{"gateway", "users", "catalog", "orders", "payments", "inventory", "shipping", "notifications"}

// QueueServices are the services that consume from a queue of their own,
// <service>.events (each declares it with the bus.Queue in its handlers.go), so the
// only ones a poison fault can inject into. Users and catalog consume no messages; the
// gateway consumes product.price_changed on an exclusive queue per instance (its cache
// invalidation), which is no work queue and takes no poison. A test reads the services' sources to keep this list and theirs the same.
var QueueServices = []string{"orders", "payments", "inventory", "shipping", "notifications"}

// PublishingServices are the services that publish messages (through their outbox):
// the ones with a queue, users (user.registered) and catalog (product.price_changed).
// The gateway publishes nothing, so a duplicate_delivery fault on it could never fire.
var PublishingServices = append([]string{"users", "catalog"}, QueueServices...)

// Fault is one injected fault.
type Fault struct {
	ID       int64     `json:"id"`
	Service  string    `json:"service"`
	Instance string    `json:"instance,omitempty"` // "" = every instance of Service
	Kind     string    `json:"kind"`
	Value    string    `json:"value,omitempty"` // normalised: "300ms±50ms", "0.5", "3"; "" for down, crash, crash_after_commit
	On       string    `json:"on,omitempty"`    // latency, error_rate: http, messages or both
	Created  time.Time `json:"created"`
	Expires  time.Time `json:"expires"`
	Source   string    `json:"source"`
	// Hidden: a diagnosis exercise holds it hidden (HiddenFaultText). It acts as any
	// other, but the services record nothing on their spans, metrics and logs that
	// would say where it is or how much, and every list and the timeline show only
	// HiddenFaultText, until RevealFaults.
	Hidden bool `json:"hidden,omitempty"`
}

// HiddenFaultText is all that is shown of a hidden fault, wherever it would show.
const HiddenFaultText = "an exercise holds a hidden fault"

// hiddenKey is the timeline key of a hidden fault's changes (faultKey names the target).
const hiddenKey = "fault (hidden)"

// FaultSpec is a fault as asked for (by the API, the CLI or an exercise), before
// validation.
type FaultSpec struct {
	Service  string `json:"service"`
	Instance string `json:"instance,omitempty"`
	Kind     string `json:"kind"`
	Value    string `json:"value,omitempty"`
	On       string `json:"on,omitempty"`
	For      string `json:"for,omitempty"` // a duration; "" = DefaultFaultFor
	// Hidden stores the fault hidden (Fault.Hidden): only a diagnosis exercise asks
	// for it, never the API or the CLI (it is not read from JSON).
	Hidden bool `json:"-"`
}

// ParseFaultArgs reads the CLI form: a service, then one kind[=value] and optional
// for=, on= and instance= words: `payments latency=300ms±50ms for=5m on=http`.
func ParseFaultArgs(service string, args []string) (FaultSpec, error) {
	spec := FaultSpec{Service: service}
	for _, a := range args {
		k, v, _ := strings.Cut(a, "=")
		switch k {
		case "for":
			spec.For = v
		case "on":
			spec.On = v
		case "instance":
			spec.Instance = v
		default:
			if spec.Kind != "" {
				return FaultSpec{}, fmt.Errorf("one fault at a time: got %s and %s", spec.Kind, k)
			}
			spec.Kind, spec.Value = k, v
		}
	}
	if spec.Kind == "" {
		return FaultSpec{}, fmt.Errorf("which fault? want one of %s", strings.Join(FaultKinds, ", "))
	}
	return spec, nil
}

// Validate checks a spec and returns the fault it asks for (no id, times from now).
// Every face refuses a bad spec with this one message, and nothing is stored.
func (s FaultSpec) Validate(now time.Time) (Fault, error) {
	f := Fault{Service: strings.TrimSpace(s.Service), Instance: strings.TrimSpace(s.Instance),
		Kind: strings.TrimSpace(s.Kind), On: strings.TrimSpace(s.On), Created: now, Hidden: s.Hidden}
	if !slices.Contains(FaultServices, f.Service) {
		return Fault{}, fmt.Errorf("unknown service %q (known: %s)", s.Service, strings.Join(FaultServices, ", "))
	}
	if f.Instance != "" && !strings.HasPrefix(f.Instance, f.Service+"-") {
		return Fault{}, fmt.Errorf("instance %q is not an instance of %s (like %s-1)", f.Instance, f.Service, f.Service)
	}
	if !slices.Contains(FaultKinds, f.Kind) {
		return Fault{}, fmt.Errorf("unknown fault %q (known: %s)", s.Kind, strings.Join(FaultKinds, ", "))
	}
	// A fault that could never fire where it is aimed is refused, not left to expire
	// unnoticed: a learner would wait for an effect that cannot come.
	consumes := slices.Contains(QueueServices, f.Service)
	switch {
	case (f.Kind == FaultPoison || f.Kind == FaultCrashAfterCommit) && !consumes:
		return Fault{}, fmt.Errorf("%s: %s consumes no messages; pick a service with a queue: %s",
			f.Kind, f.Service, strings.Join(QueueServices, ", "))
	case f.Kind == FaultDuplicateDelivery && !slices.Contains(PublishingServices, f.Service):
		return Fault{}, fmt.Errorf("%s: %s publishes no messages; pick one that does: %s",
			f.Kind, f.Service, strings.Join(PublishingServices, ", "))
	case f.On == OnMessages && !consumes:
		return Fault{}, fmt.Errorf("%s on=messages: %s consumes no messages; use on=http", f.Kind, f.Service)
	}
	value := strings.TrimSpace(s.Value)
	switch f.Kind {
	case FaultLatency:
		d, j, err := ParseLatency(value)
		if err != nil {
			return Fault{}, err
		}
		f.Value = formatLatency(d, j)
	case FaultErrorRate:
		r, err := strconv.ParseFloat(value, 64)
		if err != nil || r < 0 || r > 1 || r != r {
			return Fault{}, fmt.Errorf("bad error_rate %q: want a fraction from 0 to 1, like 0.5", value)
		}
		f.Value = strconv.FormatFloat(r, 'f', -1, 64)
	case FaultDuplicateDelivery, FaultPoison:
		if value == "" {
			value = "1"
		}
		n, err := strconv.Atoi(value)
		if err != nil || n < 1 || n > 1000 {
			return Fault{}, fmt.Errorf("bad %s count %q: want a number of messages from 1 to 1000", f.Kind, value)
		}
		f.Value = strconv.Itoa(n)
	default:
		if value != "" && value != "true" {
			return Fault{}, fmt.Errorf("%s takes no value (got %q)", f.Kind, value)
		}
	}
	switch f.Kind {
	case FaultLatency, FaultErrorRate:
		if f.On == "" {
			f.On = OnBoth
		}
		if !slices.Contains([]string{OnBoth, OnHTTP, OnMessages}, f.On) {
			return Fault{}, fmt.Errorf("bad on=%q for %s: want http, messages or both", s.On, f.Kind)
		}
	default:
		if f.On != "" {
			return Fault{}, fmt.Errorf("%s takes no on= (it acts on the whole process)", f.Kind)
		}
	}
	dur := DefaultFaultFor
	if forS := strings.TrimSpace(s.For); forS != "" {
		d, err := time.ParseDuration(forS)
		if err != nil || d <= 0 || d > MaxFaultFor {
			return Fault{}, fmt.Errorf("bad for=%q: want a duration above 0 and at most %s, like 5m", forS, MaxFaultFor)
		}
		dur = d
	}
	f.Expires = now.Add(dur)
	return f, nil
}

// ParseLatency reads "300ms" or "300ms±50ms" (also "300ms+-50ms").
func ParseLatency(s string) (delay, jitter time.Duration, err error) {
	base, jit, hasJitter := strings.Cut(strings.ReplaceAll(s, "+-", "±"), "±")
	bad := fmt.Errorf("bad latency %q: want a delay from 1ms to 1m, optionally ±jitter, like 300ms±50ms", s)
	delay, err = time.ParseDuration(strings.TrimSpace(base))
	if err != nil || delay < time.Millisecond || delay > time.Minute {
		return 0, 0, bad
	}
	if hasJitter {
		jitter, err = time.ParseDuration(strings.TrimSpace(jit))
		if err != nil || jitter < 0 || jitter > delay {
			return 0, 0, fmt.Errorf("bad latency %q: the jitter must be between 0 and the delay", s)
		}
	}
	return delay, jitter, nil
}

func formatLatency(d, j time.Duration) string {
	if j == 0 {
		return d.String()
	}
	return d.String() + "±" + j.String()
}

// Delay draws one delay of a latency fault: uniform in delay±jitter.
func (f Fault) Delay() time.Duration {
	d, j, err := ParseLatency(f.Value)
	if err != nil {
		return 0
	}
	if j > 0 {
		d += time.Duration(rand.Int64N(int64(2*j)+1)) - j
	}
	return d
}

// Rate is an error_rate fault's fraction.
func (f Fault) Rate() float64 {
	r, _ := strconv.ParseFloat(f.Value, 64)
	return r
}

// Count is a duplicate_delivery or poison fault's number of messages.
func (f Fault) Count() int {
	n, _ := strconv.Atoi(f.Value)
	return n
}

// Acts reports whether the fault acts on where ("http" or "messages").
func (f Fault) Acts(where string) bool { return f.On == "" || f.On == OnBoth || f.On == where }

// Targets reports whether the fault applies to instance of service.
func (f Fault) Targets(service, instance string) bool {
	return f.Service == service && (f.Instance == "" || f.Instance == instance)
}

// Active reports whether the fault is still in force at now.
func (f Fault) Active(now time.Time) bool { return now.Before(f.Expires) }

// OneShot reports whether the fault fires once and is then gone (crash,
// crash_after_commit, duplicate_delivery: claimed by the instance that carries it out;
// poison: carried out by the control plane when it is added).
func (f Fault) OneShot() bool {
	switch f.Kind {
	case FaultCrash, FaultCrashAfterCommit, FaultDuplicateDelivery, FaultPoison:
		return true
	}
	return false
}

// String is the fault as people read it, on the timeline and in `lab fault list`.
func (f Fault) String() string {
	var b strings.Builder
	b.WriteString(f.Kind)
	if f.Value != "" {
		b.WriteString("=" + f.Value)
	}
	if f.On != "" && f.On != OnBoth {
		b.WriteString(" on=" + f.On)
	}
	return b.String()
}

// Target is the fault's service, or its instance.
func (f Fault) Target() string {
	if f.Instance != "" {
		return f.Instance
	}
	return f.Service
}

// FaultsFor returns the faults in s that apply to instance of service at now.
func (s Settings) FaultsFor(service, instance string, now time.Time) []Fault {
	var out []Fault
	for _, f := range s.Faults {
		if f.Targets(service, instance) && f.Active(now) {
			out = append(out, f)
		}
	}
	return out
}
