package views

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"microlab/dashboard/ingest"
)

// TracesModel is the live trace list (first rendered server-side, then fed by "traces"
// messages).
type TracesModel struct {
	Traces   []ingest.TraceSummary
	Services []string // for the service filter
	// Filters, from the query string (the page's JS applies the same to live rows).
	Service    string
	ErrorsOnly bool
	MinMs      int
}

// Keep reports whether a trace passes the filters.
func (m TracesModel) Keep(t ingest.TraceSummary) bool {
	if m.Service != "" && t.RootService != m.Service && !slices.Contains(t.Services, m.Service) {
		return false
	}
	if m.ErrorsOnly && !t.Error {
		return false
	}
	return t.Duration >= time.Duration(m.MinMs)*time.Millisecond
}

// TraceModel is one trace's page; Missing when the dashboard has not seen it (or has
// already forgotten it: the stores are bounded).
type TraceModel struct {
	Waterfall Waterfall
	Missing   bool
	Jaeger    UI // linked to (the same trace) only while it answers
}

// EventsModel is the event stream and the dead-letter queues.
type EventsModel struct {
	Events      []ingest.Event
	Correlation string // filter
	DLQ         DLQModel
}

// DLQModel is the DLQ section: every queue named *.dlq with its messages.
type DLQModel struct {
	Queues []DLQQueue
	Error  string // the management API could not be read
	Source string // where they were read from (password masked)
}

// DLQQueue is one dead-letter queue.
type DLQQueue struct {
	Name     string
	Messages int
	Peek     []DLQMessage // the first few, peeked (left in the queue)
}

// DLQMessage is a dead-lettered message as peeked through the management API.
type DLQMessage struct {
	MessageID     string `json:"messageId"`
	Type          string `json:"type"`
	CorrelationID string `json:"correlationId"`
	Exchange      string `json:"originalExchange"`
	RoutingKey    string `json:"originalRoutingKey"`
	LastError     string `json:"lastError"`
	Attempt       int    `json:"attempt"`
	Payload       string `json:"payload"`
}

// SagasModel is the saga timelines.
type SagasModel struct {
	Sagas   []SagaTimeline
	Outcome string // filter: pending, confirmed, cancelled, "" = all
	Mode    string // filter: choreography, orchestration, "" = all
	// Stream is one order's event stream (the page shows one order: ?order=ID); nil
	// on the list of all sagas.
	Stream  *EventStreamModel
	Rebuild RebuildModel
}

// SagaTimeline is one order's saga with its steps positioned along a time axis.
type SagaTimeline struct {
	ingest.Saga
	Span  time.Duration // from start to the last step
	Steps []SagaStepRow
}

// SagaStepRow is one step: a marker at LeftPct of the timeline.
type SagaStepRow struct {
	ingest.SagaStep
	LeftPct float64
	Class   string // step, failed, compensation
}

// NewSagaTimeline positions a saga's steps by their time since the start.
func NewSagaTimeline(s ingest.Saga) SagaTimeline {
	t := SagaTimeline{Saga: s}
	for _, st := range s.Steps {
		t.Span = max(t.Span, st.Since)
	}
	for _, st := range s.Steps {
		r := SagaStepRow{SagaStep: st, Class: "step"}
		if t.Span > 0 {
			r.LeftPct = 100 * float64(st.Since) / float64(t.Span)
		}
		switch {
		case st.Compensation:
			r.Class = "compensation"
		case st.Failed:
			r.Class = "failed"
		}
		t.Steps = append(t.Steps, r)
	}
	return t
}

// Keep reports whether a saga passes the filters.
func (m SagasModel) Keep(s ingest.Saga) bool {
	return (m.Outcome == "" || s.Outcome == m.Outcome) && (m.Mode == "" || s.Mode == m.Mode)
}

// MetricsModel is the metrics page: panels from Prometheus.
type MetricsModel struct {
	Prometheus string // URL shown (password masked)
	Panels     []Panel
	// Grafana is the UI the panels link to; while it is not up, the page says why
	// there are no links, once, above the panels.
	Grafana UI
	// Unreachable: Prometheus did not answer at all; the page then says exactly
	// "Prometheus unreachable at <URL>" instead of drawing empty charts.
	Unreachable bool
}

// UnreachableMessage is what the metrics page says when Prometheus cannot be reached.
func UnreachableMessage(url string) string { return "Prometheus unreachable at " + url }

// Panel is one chart.
type Panel struct {
	ID      string // data-testid="panel-<ID>"
	Title   string
	Query   string
	Unit    string // "/s", "ms", "%", ""
	Grafana string // link to the same panel in Grafana; "" while Grafana is not up
	Series  []Series
	Error   string // this panel's query failed
}

// Series is one line of a chart.
type Series struct {
	Label  string
	Points []Point
}

// Point is one sample.
type Point struct {
	T time.Time
	V float64
}

// Chart is a panel's series scaled into an SVG viewBox (0 0 ChartW ChartH).
type Chart struct {
	Lines      []ChartLine
	Max        float64
	From, To   time.Time
	Empty      bool
	YMaxLabel  string
	XFromLabel string
	XToLabel   string
}

// ChartLine is one polyline.
type ChartLine struct {
	Label, Points, Color, Last string
}

// Chart sizes.
const (
	ChartW = 600
	ChartH = 160
)

// Chart scales the panel's series.
func (p Panel) Chart() Chart {
	c := Chart{Empty: true}
	for _, s := range p.Series {
		for _, pt := range s.Points {
			if c.Empty || pt.T.Before(c.From) {
				c.From = pt.T
			}
			if c.Empty || pt.T.After(c.To) {
				c.To = pt.T
			}
			c.Max = max(c.Max, pt.V)
			c.Empty = false
		}
	}
	if c.Empty {
		return c
	}
	if c.Max == 0 {
		c.Max = 1
	}
	span := c.To.Sub(c.From)
	for i, s := range p.Series {
		var b strings.Builder
		for _, pt := range s.Points {
			x := 0.0
			if span > 0 {
				x = ChartW * float64(pt.T.Sub(c.From)) / float64(span)
			}
			y := ChartH - ChartH*pt.V/c.Max
			fmt.Fprintf(&b, "%.1f,%.1f ", x, y)
		}
		last := ""
		if n := len(s.Points); n > 0 {
			last = FormatValue(s.Points[n-1].V, p.Unit)
		}
		c.Lines = append(c.Lines, ChartLine{Label: s.Label, Points: strings.TrimSpace(b.String()),
			Color: fmt.Sprintf("hsl(%d 65%% 45%%)", (i*67+200)%360), Last: last})
	}
	c.YMaxLabel = FormatValue(c.Max, p.Unit)
	c.XFromLabel, c.XToLabel = c.From.UTC().Format("15:04:05"), c.To.UTC().Format("15:04:05")
	return c
}

// FormatValue formats a sample with its unit.
func FormatValue(v float64, unit string) string {
	switch unit {
	case "%":
		return fmt.Sprintf("%.1f%%", v)
	case "ms":
		return fmt.Sprintf("%.0fms", v)
	case "/s":
		return fmt.Sprintf("%.2f/s", v)
	}
	return fmt.Sprintf("%.4g", v)
}

// SwitchboardModel lists the lab settings (grouped by the pattern they switch), the
// faults in force, and the recent changes.
type SwitchboardModel struct {
	Settings []SettingRow
	Faults   []FaultRow
	Changes  []ChangeRow
	Error    string // the settings store could not be read
	Traffic  TrafficState
	// FaultServices and FaultKinds fill the fault form (control.FaultServices, FaultKinds).
	FaultServices, FaultKinds []string
}

// SettingGroup is the settings of one pattern.
type SettingGroup struct {
	ID, Title, Blurb string
	Settings         []SettingRow
}

// settingGroups decide where a setting shows, by the prefix of its key; a key no group
// claims lands in "other", so a setting added to control.Defs shows without a change
// here.
var settingGroups = []struct {
	id, title, blurb string
	prefixes         []string
}{
	{"saga", "Saga", "How a checkout is coordinated across services, and how long a step may take.", []string{"saga."}},
	{"reliability", "Reliability", "Outbox, inbox (idempotent consumer) and the broker's retries before the DLQ.", []string{"outbox.", "inbox.", "amqp."}},
	{"resilience", "Resilience", "What protects callers from a slow or failing service: breaker, rate limit, timeouts, retries.", []string{"gateway.", "http."}},
	{"data", "Data", "Who owns which data, and how order history is read.", []string{"db.", "read."}},
	{"notifications", "Notifications", "Whether orders waits for notifications before confirming.", []string{"notifications."}},
	{"transport", "Transport", "How orders asks catalog for prices: HTTP/JSON or gRPC.", []string{"catalog."}},
}

// Groups returns the settings grouped by pattern, in the groups' order, each group's
// settings in definition order; empty groups are left out.
func (m SwitchboardModel) Groups() []SettingGroup {
	var out []SettingGroup
	byID := map[string]int{}
	for _, g := range settingGroups {
		byID[g.id] = len(out)
		out = append(out, SettingGroup{ID: g.id, Title: g.title, Blurb: g.blurb})
	}
	byID["other"] = len(out)
	out = append(out, SettingGroup{ID: "other", Title: "Other", Blurb: "Settings no pattern above claims (yet)."})
	for _, s := range m.Settings {
		id := "other"
	find:
		for _, g := range settingGroups {
			for _, p := range g.prefixes {
				if strings.HasPrefix(s.Key, p) {
					id = g.id
					break find
				}
			}
		}
		out[byID[id]].Settings = append(out[byID[id]].Settings, s)
	}
	return slices.DeleteFunc(out, func(g SettingGroup) bool { return len(g.Settings) == 0 })
}

// FaultRow is one fault in force, as GET /api/lab/faults lists it.
type FaultRow struct {
	ID          int64     `json:"id"`
	Service     string    `json:"service"`
	Instance    string    `json:"instance"`
	Kind        string    `json:"kind"`
	Value       string    `json:"value"`
	On          string    `json:"on"`
	Created     time.Time `json:"created"`
	Expires     time.Time `json:"expires"`
	Source      string    `json:"source"`
	SecondsLeft float64   `json:"secondsLeft"`
	Target      string    `json:"target"` // the instance, or the service
	Text        string    `json:"text"`   // "latency=300ms on=http"
	Who         string    `json:"who"`
	// Hidden: a diagnosis exercise holds it; the row says so, not where (no clear).
	Hidden bool `json:"hidden,omitempty"`
}

// Left is the time left, as the list shows it (the browser counts it down).
func (f FaultRow) Left() string {
	s := int(f.SecondsLeft)
	return fmt.Sprintf("%d:%02d", s/60, s%60)
}

// Who is how a change's source shows on the timeline: the dashboard is "browser",
// `lab settings|fault|reset` is "CLI", an exercise "exercise"; anything else (an
// instance carrying out a one-shot fault) shows as itself.
func Who(source string) string {
	switch {
	case source == "dashboard":
		return "browser"
	case strings.HasPrefix(source, "lab "):
		return "CLI"
	case strings.HasPrefix(source, "exercise"):
		return "exercise"
	}
	return source
}

// SettingRow is one setting with its form.
type SettingRow struct {
	Key, Value, Default, Help string
	Allowed                   []string // a select when set, a text field otherwise
}

// ChangeRow is one entry of the changes timeline.
type ChangeRow struct {
	Revision int64     `json:"revision"`
	Key      string    `json:"key"`
	Old      string    `json:"old"`
	New      string    `json:"new"`
	Source   string    `json:"source"`
	Who      string    `json:"who"` // Who(Source)
	At       time.Time `json:"at"`
}

// TrafficState is the background traffic generator's state.
type TrafficState struct {
	Running bool      `json:"running"`
	Rate    float64   `json:"rate"` // orders per second
	Until   time.Time `json:"until,omitzero"`
	Placed  int64     `json:"placed"`
	Failed  int64     `json:"failed"`
}

// ShopModel is the storefront.
type ShopModel struct {
	Gateway  string // where orders go (shown)
	Users    []DemoUser
	Products []Product
	Error    string // the catalog could not be read
	Traffic  TrafficState
}

// DemoUser is a seeded account.
type DemoUser struct{ Email, Password string }

// Product is a catalog entry.
type Product struct {
	SKU        string `json:"sku"`
	Name       string `json:"name"`
	PriceCents int64  `json:"priceCents"`
	Currency   string `json:"currency"`
}

// Price formats the price.
func (p Product) Price() string {
	return fmt.Sprintf("%d.%02d %s", p.PriceCents/100, p.PriceCents%100, p.Currency)
}

// whoDetail adds the source to Who when they differ (" (lab fault)").
func whoDetail(c ChangeRow) string {
	if c.Who == c.Source || c.Source == "" {
		return ""
	}
	return " (" + c.Source + ")"
}
