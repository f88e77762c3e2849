// Package views is the dashboard's HTML: templ components and the view-model structs
// they render. Builders here turn the ingest types into what a page shows (a waterfall's
// bar positions, a saga's step offsets) so the templates only lay things out, and so the
// arithmetic is tested without a browser.
//
// Every element a test or a learner's script needs to find carries a data-testid.
package views

import (
	"fmt"
	"hash/fnv"
	"net/url"
	"time"
)

// Page is what the layout needs: the page's title and which nav entry is active.
type Page struct {
	Title  string
	Active string // overview, traces, events, sagas, metrics, switchboard, shop, docs
}

// NavItem is one entry of the navigation.
type NavItem struct{ ID, Label, Href string }

// Nav lists the views, in menu order.
var Nav = []NavItem{
	{"overview", "Overview", "/"},
	{"exercises", "Exercises", "/exercises"},
	{"traces", "Traces", "/traces"},
	{"events", "Events", "/events"},
	{"sagas", "Sagas", "/sagas"},
	{"metrics", "Metrics", "/charts"}, // /metrics is the dashboard's own Prometheus endpoint
	{"switchboard", "Switchboard", "/switchboard"},
	{"shop", "Shop", "/shop"},
	{"docs", "Docs", "/docs/"}, // the patterns' index (docs/patterns/README.md)
}

// ServiceHue gives each service a stable colour (the same in the map, the waterfall
// and the saga timelines), so a learner learns "orders is blue" once.
func ServiceHue(service string) int {
	fixed := map[string]int{"gateway": 210, "users": 280, "catalog": 40, "orders": 200,
		"payments": 140, "inventory": 30, "shipping": 260, "notifications": 330, "dashboard": 0}
	if h, ok := fixed[service]; ok {
		return h
	}
	f := fnv.New32a()
	_, _ = f.Write([]byte(service))
	return int(f.Sum32() % 360)
}

// ServiceColor is the CSS colour of a service.
func ServiceColor(service string) string {
	return fmt.Sprintf("hsl(%d 65%% 50%%)", ServiceHue(service))
}

// Ms formats a duration for people: 830µs, 12.4ms, 1.25s.
func Ms(d time.Duration) string {
	switch {
	case d < time.Millisecond:
		return fmt.Sprintf("%dµs", d.Microseconds())
	case d < time.Second:
		return fmt.Sprintf("%.1fms", float64(d)/float64(time.Millisecond))
	default:
		return fmt.Sprintf("%.2fs", d.Seconds())
	}
}

// Clock formats a time of day with milliseconds (UTC: the lab's logs are UTC too).
func Clock(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format("15:04:05.000")
}

// JaegerTracePath is a trace's page in Jaeger's UI, under its base (UI.Link).
func JaegerTracePath(traceID string) string { return "/trace/" + url.PathEscape(traceID) }

// JaegerPurpose completes the sentence said instead of a link to a trace in Jaeger.
const JaegerPurpose = "open this trace in Jaeger"

func pct(f float64) string { return fmt.Sprintf("%.3f%%", f) }

// ExercisesModel is the list of exercises (/exercises).
type ExercisesModel struct {
	Items []ExerciseItem
	Error string // the engine is not running: why
}

// ExerciseItem is one exercise in the list, with its progress.
type ExerciseItem struct {
	ID, Title, Level string
	Minutes          int
	Patterns         []string
	Prerequisites    []string
	Steps, Done      int
	State            string // "" not started, open, completed
}

// Progress is the item's progress as the list shows it.
func (e ExerciseItem) Progress() string {
	switch e.State {
	case "completed":
		return "completed"
	case "open":
		return fmt.Sprintf("%d of %d steps", e.Done, e.Steps)
	}
	return "not started"
}

// ExerciseModel is one exercise's page (/exercises/{id}). README and each step's
// Instructions are HTML rendered from the exercise's Markdown, raw HTML in it escaped
// (the dashboard's markdown renderer): the only HTML the page takes as it is.
type ExerciseModel struct {
	ID, Title, Level string
	Minutes          int
	Patterns         []string
	Prerequisites    []string
	Diagnosis        bool
	README           string
	State            string // "" not started, open, completed
	Steps            []ExerciseStep
}

// ExerciseStep is one step with its state: done, current or locked.
type ExerciseStep struct {
	ID           string
	Number       int
	Instructions string // HTML (see ExerciseModel)
	State        string
	Missing      string   // HTML, like Instructions
	Hints        []string // revealed so far, each HTML
	HintsTotal   int
	Question     string // "": the step asks none
	Choices      []string
	Evidence     []EvidenceLink
}

// EvidenceLink is what ticked a step, and where to see it.
type EvidenceLink struct{ Href, Label string }
