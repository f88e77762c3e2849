package exercises

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"testing/fstest"
)

// Every committed exercise loads, with its README, and writes back as itself.
func TestBuiltinExercisesValidate(t *testing.T) {
	es, err := Load(Builtin())
	if err != nil {
		t.Fatalf("the committed exercises do not validate:\n%v", err)
	}
	var ids []string
	for _, e := range es {
		ids = append(ids, e.ID)
		if strings.TrimSpace(e.README) == "" {
			t.Errorf("%s: empty README", e.ID)
		}
		out, err := Marshal(e)
		if err != nil {
			t.Fatal(err)
		}
		back, err := Parse("exercises/"+e.ID+"/exercise.yaml", out)
		if err != nil {
			t.Fatalf("%s: marshalled, it does not parse: %v\n%s", e.ID, err, out)
		}
		back.README = e.README
		if !reflect.DeepEqual(e, back) {
			t.Errorf("%s: marshal then parse gives another exercise:\n%s", e.ID, out)
		}
	}
	if got := strings.Join(ids, " "); !strings.Contains(got, "01-follow-an-order") || !strings.Contains(got, "07-outbox") {
		t.Errorf("loaded %s, want 01-follow-an-order and 07-outbox among them", got)
	}
}

// base is a small valid exercise; each malformed case below changes one thing in it.
// Its lines, for reading the expected errors:
//
//	 1 id   5 minutes   8 outbox.enabled   10 the fault   12 steps[0]   14-17 its check
//	18 missing   19-20 solution   21 steps[1]   23-26 its check   29 its answer
const base = `id: 07-outbox
title: Outbox
patterns: [transactional outbox]
level: intermediate
minutes: 20
setup:
  settings:
    outbox.enabled: false
  faults:
    - {service: payments, kind: crash_after_commit}
steps:
  - id: place
    instructions: Place an order.
    check:
      kind: saga
      outcome: confirmed
      within: 30s
    missing: No confirmed order yet.
    solution:
      - order: {sku: LAB-MUG, card: 4242 4242 4242 4242}
  - id: slowest
    instructions: Find the slowest span.
    check:
      kind: answer
      question: Which span took longest?
      expect: {from: slowest_span, same_order_as: place}
    missing: An answer.
    solution:
      - answer: {from: slowest_span, same_order_as: place}
cleanup:
  settings:
    outbox.enabled: true
`

const file = "exercises/07-outbox/exercise.yaml"

func TestParseBase(t *testing.T) {
	e, err := Parse(file, []byte(base))
	if err != nil {
		t.Fatal(err)
	}
	if e.Steps[0].Check.Saga.Outcome != "confirmed" || e.Steps[0].Check.Timeout().String() != "30s" ||
		e.Setup.Settings[0] != (Setting{"outbox.enabled", "false"}) || e.Steps[1].Check.Answer.Expect.SameOrderAs != "place" {
		t.Errorf("parsed %+v", e)
	}
}

func TestParseMalformed(t *testing.T) {
	kinds := "(kinds: event, saga, span, promql, setting, fault, order, ledger, answer, all, any)"
	for _, tc := range []struct {
		name, old, new string
		want           []string // each file:line: field: message, in this order
	}{
		{"unknown field", "    missing: No confirmed", "    mising: No confirmed", []string{
			file + ":12: steps[0].missing: missing: what the learner is told while the check does not hold",
			file + ":18: steps[0].mising: unknown field (fields: id, instructions, hints, check, missing, solution)"}},
		{"missing check", "    check:\n      kind: saga\n      outcome: confirmed\n      within: 30s\n", "", []string{
			file + ":12: steps[0].check: missing: every step needs a check " + kinds}},
		{"unknown check kind", "kind: saga", "kind: sags", []string{
			file + `:15: steps[0].check.kind: unknown check kind "sags" ` + kinds}},
		{"field of another kind", "outcome: confirmed", "status: confirmed", []string{
			file + ":14: steps[0].check: a saga check needs at least one of mode, outcome, reason, compensation",
			file + ":16: steps[0].check.status: unknown field for a check of kind saga (fields: mode, outcome, reason, compensation, same_order_as, kind, within)"}},
		{"bad duration", "within: 30s", "within: 30 sec", []string{
			file + `:17: steps[0].check.within: bad duration "30 sec": want a duration like 500ms, 30s or 2m`}},
		{"unknown setting", "    outbox.enabled: false", "    outbox.enable: false", []string{
			file + `:8: setup.settings.outbox.enable: unknown setting "outbox.enable" (known: saga.mode, saga.step_timeout, outbox.enabled, inbox.enabled, amqp.retry.delays, gateway.breaker.enabled, gateway.breaker.failures, gateway.breaker.open_for, gateway.rate_limit.rps, gateway.rate_limit.burst, gateway.cache.ttl, http.timeout, http.retries, db.topology, inventory.schema, notifications.mode, read.model, catalog.transport, gateway.discovery, strangler.routes, deploy.catalog.v2, deploy.catalog.weights, deploy.catalog.canary_max_error_rate, scale.orders, scale.payments, scale.inventory, scale.shipping, scale.notifications, scale.catalog)`}},
		{"bad setting value", "    outbox.enabled: false", "    outbox.enabled: maybe", []string{
			file + `:8: setup.settings.outbox.enabled: bad value "maybe" for outbox.enabled: want true or false`}},
		{"unknown fault", "kind: crash_after_commit", "kind: crash_after_comit", []string{
			file + `:10: setup.faults[0].kind: unknown fault "crash_after_comit" (known: latency, error_rate, down, crash, crash_after_commit, duplicate_delivery, poison)`}},
		{"unknown service", "service: payments", "service: paymnts", []string{
			file + `:10: setup.faults[0].service: unknown service "paymnts" (known: gateway, users, catalog, orders, payments, inventory, shipping, notifications)`}},
		{"fault that cannot fire", "service: payments", "service: gateway", []string{
			file + `:10: setup.faults[0]: crash_after_commit: gateway consumes no messages; pick a service with a queue: orders, payments, inventory, shipping, notifications`}},
		{"step without solution", "    solution:\n      - order: {sku: LAB-MUG, card: 4242 4242 4242 4242}", "    solution: []", []string{
			file + ":19: steps[0].solution: missing: every step needs a reference solution (actions: set, fault, clear_faults, order, traffic, scale, price, rebuild, wait, answer)"}},
		{"id is not the directory", "id: 07-outbox", "id: 07-outbx", []string{
			file + `:1: id: "07-outbx" must be the directory's name, "07-outbox"`}},
		{"duplicate step id", "  - id: slowest", "  - id: place", []string{
			file + `:21: steps[1].id: step id "place" given twice (also steps[0])`}},
		{"reference to a later step", "expect: {from: slowest_span, same_order_as: place}", "expect: {from: slowest_span, same_order_as: slowest}", []string{
			file + `:26: steps[1].check.expect.same_order_as: step "slowest" does not come before this one: name an earlier step, whose order is known by now`}},
		{"two actions in one", "      - answer: {from: slowest_span, same_order_as: place}", "      - {answer: {text: x}, wait: 1s}", []string{
			file + ":29: steps[1].solution[0]: one action at a time: got wait and answer (write them as separate actions)"}},
		{"a field given twice", "level: intermediate", "level: intermediate\nlevel: advanced", []string{
			file + ":5: level: given twice"}},
		{"random fault", "    - {service: payments, kind: crash_after_commit}",
			"    - {kind: latency, random: {services: [catalog, payments], values: [200ms, 400ms]}}", nil},
		{"random fault with its service too", "    - {service: payments, kind: crash_after_commit}",
			"    - {service: payments, kind: latency, value: 200ms, random: {services: [catalog, payments]}}", []string{
				file + ":10: setup.faults[0].service: service or random.services, not both"}},
		{"random fault with one choice", "    - {service: payments, kind: crash_after_commit}",
			"    - {kind: latency, value: 200ms, random: {services: [payments]}}", []string{
				file + ":10: setup.faults[0].random.services: a random choice needs at least two choices (or write the one as the fault's own)"}},
		{"random fault drawing nothing", "    - {service: payments, kind: crash_after_commit}",
			"    - {service: payments, kind: latency, random: {}}", []string{
				file + ":10: setup.faults[0].random: missing: what to draw from: services, values, or both"}},
		{"random fault on a service that cannot carry it", "    - {service: payments, kind: crash_after_commit}",
			"    - kind: crash_after_commit\n      random:\n        services: [payments, catalog]", []string{
				file + `:12: setup.faults[0].random.services[1]: crash_after_commit: catalog consumes no messages; pick a service with a queue: orders, payments, inventory, shipping, notifications`}},
		{"random fault with a bad value", "    - {service: payments, kind: crash_after_commit}",
			"    - kind: latency\n      random:\n        services: [payments, catalog]\n        values: [200ms, slow]", []string{
				file + `:13: setup.faults[0].random.values[1]: bad latency "slow": want a delay from 1ms to 1m, optionally ±jitter, like 300ms±50ms`}},
		{"random fault in a solution", "      - order: {sku: LAB-MUG, card: 4242 4242 4242 4242}",
			"      - fault: {kind: latency, random: {services: [catalog, payments]}, value: 1s}", []string{
				file + ":20: steps[0].solution[0].fault.random: only a setup fault draws at random: a solution does exactly what it says"}},
		{"not YAML", "title: Outbox", "title: [Outbox", []string{
			file + ":2: not YAML: did not find expected ',' or ']'"}},
		{"not YAML, on line 1", "id: 07-outbox", "{id: 07-outbox", []string{
			file + ":2: not YAML: did not find expected ',' or '}'"}},
		{"not YAML, a scanner error", "title: Outbox", "title: @Outbox", []string{
			file + ":2: not YAML: found character that cannot start any token"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := strings.Replace(base, tc.old, tc.new, 1)
			if src == base {
				t.Fatalf("%q is not in base", tc.old)
			}
			_, err := Parse(file, []byte(src))
			want := strings.Join(tc.want, "\n")
			if tc.want == nil {
				want = "<nil>"
			}
			if got := errText(err); got != want {
				t.Errorf("got\n%s\nwant\n%s", got, want)
			}
			var fe *FieldError
			if err != nil && !errors.As(err, &fe) {
				t.Errorf("%T is not a *FieldError", err)
			}
		})
	}
}

func errText(err error) string {
	if err == nil {
		return "<nil>"
	}
	return err.Error()
}

// dirFS lays exercises out as Load reads them: NN-slug/exercise.yaml and README.md.
func dirFS(files map[string]string) fstest.MapFS {
	m := fstest.MapFS{}
	for dir, yaml := range files {
		m[dir+"/exercise.yaml"] = &fstest.MapFile{Data: []byte(yaml)}
		m[dir+"/README.md"] = &fstest.MapFile{Data: []byte("# " + dir + "\n")}
	}
	return m
}

// withID is base as exercise id, with prerequisites.
func withID(id string, prerequisites ...string) string {
	s := strings.Replace(base, "id: 07-outbox", "id: "+id, 1)
	if len(prerequisites) > 0 {
		s = strings.Replace(s, "minutes: 20\n", "minutes: 20\nprerequisites: ["+strings.Join(prerequisites, ", ")+"]\n", 1)
	}
	return s
}

func TestLoadAcrossExercises(t *testing.T) {
	for _, tc := range []struct {
		name string
		fsys fstest.MapFS
		want string
	}{
		{"prerequisites that exist", dirFS(map[string]string{"07-outbox": withID("07-outbox", "08-inbox"), "08-inbox": withID("08-inbox")}), "<nil>"},
		{"missing prerequisite", dirFS(map[string]string{"07-outbox": withID("07-outbox", "01-basics")}),
			`exercises/07-outbox/exercise.yaml:6: prerequisites[0]: no exercise "01-basics" (exercises: 07-outbox)`},
		{"prerequisite cycle", dirFS(map[string]string{"07-outbox": withID("07-outbox", "08-inbox"), "08-inbox": withID("08-inbox", "07-outbox")}),
			`exercises/08-inbox/exercise.yaml:6: prerequisites[0]: prerequisite cycle: 07-outbox → 08-inbox → 07-outbox`},
		{"own prerequisite", dirFS(map[string]string{"07-outbox": withID("07-outbox", "07-outbox")}),
			`exercises/07-outbox/exercise.yaml:6: prerequisites[0]: an exercise cannot be its own prerequisite`},
		{"duplicate number", dirFS(map[string]string{"07-outbox": withID("07-outbox"), "07-other": withID("07-other")}),
			`exercises/07-outbox/exercise.yaml:1: id: number 07 is taken by 07-other: give each exercise its own number`},
		{"missing README", func() fstest.MapFS {
			m := dirFS(map[string]string{"07-outbox": withID("07-outbox")})
			delete(m, "07-outbox/README.md")
			return m
		}(), `exercises/07-outbox/README.md: missing: every exercise has a README.md for the learner`},
		{"errors of several files, by file and line", dirFS(map[string]string{
			"07-outbox": strings.Replace(withID("07-outbox"), "kind: saga", "kind: sags", 1),
			"08-inbox":  strings.Replace(withID("08-inbox"), "id: 08-inbox", "id: 08-inbx", 1)}),
			`exercises/07-outbox/exercise.yaml:15: steps[0].check.kind: unknown check kind "sags" (kinds: event, saga, span, promql, setting, fault, order, ledger, answer, all, any)` + "\n" +
				`exercises/08-inbox/exercise.yaml:1: id: "08-inbx" must be the directory's name, "08-inbox"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			es, err := Load(tc.fsys)
			if got := errText(err); got != tc.want {
				t.Errorf("got\n%s\nwant\n%s", got, tc.want)
			}
			if err != nil && es != nil {
				t.Errorf("Load returned exercises along with its error")
			}
		})
	}
}
