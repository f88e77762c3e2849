// Package control is the lab's control plane as the services see it: settings that
// switch patterns on and off (saga mode, outbox, inbox, ...), persisted in database
// `lab`, announced on the lab.control fanout exchange, read by every instance at start
// (before it consumes or serves) and applied live.
package control

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"microlab/services/contracts"
)

// Setting keys.
const (
	SagaMode        = "saga.mode"
	SagaStepTimeout = "saga.step_timeout"
	OutboxEnabled   = "outbox.enabled"
	InboxEnabled    = "inbox.enabled"
)

// Def describes one setting: its default, what it does, and which values it accepts.
type Def struct {
	Key     string
	Default string
	Help    string
	Allowed []string // for enumerations; nil when parse decides
	parse   func(string) (string, error)
}

// Defs lists every setting. Adding a setting is adding a line here.
func Defs() []Def {
	return []Def{
		{Key: SagaMode, Default: contracts.ModeChoreography, Allowed: []string{contracts.ModeChoreography, contracts.ModeOrchestration},
			Help: "how the checkout saga is coordinated: services reacting to events, or an orchestrator in orders sending commands"},
		{Key: SagaStepTimeout, Default: "15s", parse: durationBetween(time.Second, 10*time.Minute),
			Help: "orchestration: how long the orchestrator waits for a step's reply before compensating"},
		{Key: OutboxEnabled, Default: "true", parse: parseBool,
			Help: "write events in the same transaction as the change (off: publish after commit, the dual-write bug)"},
		{Key: InboxEnabled, Default: "true", parse: parseBool,
			Help: "record handled message ids and skip duplicates (off: a redelivered message applies twice)"},
	}
}

// Lookup returns the definition of key.
func Lookup(key string) (Def, bool) {
	for _, d := range Defs() {
		if d.Key == key {
			return d, true
		}
	}
	return Def{}, false
}

// Validate checks a value for key and returns it normalised ("TRUE" → "true").
func Validate(key, value string) (string, error) {
	d, ok := Lookup(key)
	if !ok {
		keys := make([]string, 0, len(Defs()))
		for _, d := range Defs() {
			keys = append(keys, d.Key)
		}
		return "", fmt.Errorf("unknown setting %q (known: %s)", key, strings.Join(keys, ", "))
	}
	value = strings.TrimSpace(value)
	if d.Allowed != nil {
		if !slices.Contains(d.Allowed, value) {
			return "", fmt.Errorf("bad value %q for %s: want one of %s", value, key, strings.Join(d.Allowed, ", "))
		}
		return value, nil
	}
	v, err := d.parse(value)
	if err != nil {
		return "", fmt.Errorf("bad value %q for %s: %v", value, key, err)
	}
	return v, nil
}

func parseBool(s string) (string, error) {
	b, err := strconv.ParseBool(s)
	if err != nil {
		return "", fmt.Errorf("want true or false")
	}
	return strconv.FormatBool(b), nil
}

func durationBetween(lo, hi time.Duration) func(string) (string, error) {
	return func(s string) (string, error) {
		d, err := time.ParseDuration(s)
		if err != nil || d < lo || d > hi {
			return "", fmt.Errorf("want a duration between %s and %s, like 15s", lo, hi)
		}
		return d.String(), nil
	}
}

// Settings is one consistent snapshot of every setting (defaults filled in) and of the
// faults in force when it was read (FaultsFor filters out those expired since).
type Settings struct {
	Values   map[string]string
	Faults   []Fault
	Revision int64 // increases with every change; lets an instance ignore stale news
}

// Defaults is the snapshot of an untouched lab.
func Defaults() Settings {
	v := map[string]string{}
	for _, d := range Defs() {
		v[d.Key] = d.Default
	}
	return Settings{Values: v}
}

// Get returns a value (the default if unset).
func (s Settings) Get(key string) string {
	if v, ok := s.Values[key]; ok {
		return v
	}
	d, _ := Lookup(key)
	return d.Default
}

// SagaMode is the mode new checkouts start in.
func (s Settings) SagaMode() string { return s.Get(SagaMode) }

// Outbox reports whether events go through the outbox.
func (s Settings) Outbox() bool { return s.Get(OutboxEnabled) == "true" }

// Inbox reports whether consumers deduplicate.
func (s Settings) Inbox() bool { return s.Get(InboxEnabled) == "true" }

// StepTimeout is how long an orchestrated step may take.
func (s Settings) StepTimeout() time.Duration {
	d, err := time.ParseDuration(s.Get(SagaStepTimeout))
	if err != nil {
		return 15 * time.Second
	}
	return d
}
