package main

import (
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/yuin/goldmark"
	"github.com/yuin/goldmark/ast"
	"github.com/yuin/goldmark/extension"
	"github.com/yuin/goldmark/text"

	"microlab/dashboard/views"
	"microlab/exercises"
	"microlab/observability"
	"microlab/services/contracts"
	"microlab/services/platform/control"
)

// TestExerciseTextsNameWhatExists reads every built-in exercise as a learner does — its
// README and each step's instructions, hints and messages — and holds what they point
// at to the lab as it is:
//   - every link resolves: a dashboard page answers 200 on a real dashboard, a docs file
//     exists in the repository, a Grafana link names a dashboard the lab provisions, a
//     Jaeger link is one of its UI's pages; nothing links off the machine (a class may
//     be offline);
//   - every setting named (`outbox.enabled`, `go run ./lab settings k=v`) is one of the
//     control plane's, with a value it accepts; every fault kind is one; every span name
//     (`process order.placed`) is about a message type or queue that exists; every
//     metric is one the lab's rules or Grafana panels chart.
//
// An exercise that tells a learner to click a setting that was renamed, or links to a
// page that moved, fails here, not in a classroom.
func TestExerciseTextsNameWhatExists(t *testing.T) {
	t.Parallel()
	list := builtin(t)
	l := newExerciseLab(t, list)
	known := labNames(t)
	for _, ex := range list {
		t.Run(ex.ID, func(t *testing.T) {
			for _, tx := range learnerTexts(ex) {
				links, names := scanMarkdown(tx.text)
				for _, dest := range links {
					if err := known.checkLink(t, l.fixture, ex.ID, dest); err != nil {
						t.Errorf("%s: link %q: %v", tx.where, dest, err)
					}
				}
				for _, name := range names {
					if err := known.checkName(name); err != nil {
						t.Errorf("%s: %q: %v", tx.where, name, err)
					}
				}
			}
		})
	}
}

// The checker must catch what it exists to catch.
func TestExerciseTextCheckerCatches(t *testing.T) {
	t.Parallel()
	known := labNames(t)
	for _, bad := range []string{"outbox.enable", "go run ./lab settings saga.mode=choreograph",
		"crash_after_comit", "process order.plaaced", "saga_startd_total", "messaging_in_flite", "lab settings gateway.breaker.failures=0", "http.timeoutt", "db.topolgy", "inventory.stocks", "payment-2", "payments-0", "payments-12"} {
		if err := known.checkName(bad); err == nil {
			t.Errorf("%q passes the checker", bad)
		}
	}
	for _, good := range []string{"outbox.enabled", "go run ./lab settings saga.mode=orchestration",
		"crash_after_commit", "process order.placed", "publish payments.dlq", "saga_started_total",
		"out_of_stock", "payments.events", "payment.authorized", "4242 4242 4242 4242", "http.response.status_code", "db.system", "inventory.stock", "order_items", "read_model_apply_lag_seconds", "payments-2", "shipping-1"} {
		if err := known.checkName(good); err != nil {
			t.Errorf("%q: %v", good, err)
		}
	}
	for _, bad := range []string{"https://microservices.io/patterns/data/saga.html", "../../docs/no-such-page.md",
		"http://localhost:3000/d/no-such-dashboard", "http://localhost:8080/no-such-view"} {
		if err := known.checkLink(t, nil, "07-outbox", bad); err == nil {
			t.Errorf("link %q passes the checker", bad)
		}
	}
}

type learnerText struct{ where, text string }

// learnerTexts are the Markdown texts a learner reads in an exercise.
func learnerTexts(ex exercises.Exercise) []learnerText {
	out := []learnerText{{ex.ID + "/README.md", ex.README}}
	for _, st := range ex.Steps {
		at := func(what string) string { return fmt.Sprintf("%s/exercise.yaml: step %s: %s", ex.ID, st.ID, what) }
		out = append(out, learnerText{at("instructions"), st.Instructions}, learnerText{at("missing"), st.Missing})
		for i, h := range st.Hints {
			out = append(out, learnerText{at(fmt.Sprintf("hint %d", i+1)), h})
		}
		if q := st.Question(); q != nil {
			out = append(out, learnerText{at("question"), q.Question}, learnerText{at("wrong"), q.Wrong})
		}
	}
	return out
}

// scanMarkdown returns the link destinations of src, and the texts of its code spans
// and strong emphasis: where exercises name settings, faults, spans and metrics.
func scanMarkdown(src string) (links, names []string) {
	b := []byte(src)
	// The links as written: not markdown's parser, which makes dashboard links relative.
	doc := goldmark.New(goldmark.WithExtensions(extension.GFM)).Parser().Parse(text.NewReader(b))
	_ = ast.Walk(doc, func(n ast.Node, entering bool) (ast.WalkStatus, error) {
		if !entering {
			return ast.WalkContinue, nil
		}
		switch n := n.(type) {
		case *ast.Link:
			links = append(links, string(n.Destination))
		case *ast.AutoLink:
			if n.AutoLinkType == ast.AutoLinkURL { // not an e-mail address (the demo users')
				links = append(links, string(n.URL(b)))
			}
		case *ast.CodeSpan:
			names = append(names, plain(n, b))
		case *ast.Emphasis:
			if n.Level == 2 {
				names = append(names, plain(n, b))
			}
		}
		return ast.WalkContinue, nil
	})
	// Bare URLs too: goldmark's linkify leaves http://localhost:3000 as text, but a
	// learner still types it in.
	for _, u := range bareURL.FindAllString(src, -1) {
		u = strings.TrimRight(u, ".,;:!?") // the sentence's, not the URL's
		if !slices.Contains(links, u) {
			links = append(links, u)
		}
	}
	return links, names
}

// plain is the text inside n.
func plain(n ast.Node, src []byte) string {
	var sb strings.Builder
	_ = ast.Walk(n, func(c ast.Node, entering bool) (ast.WalkStatus, error) {
		if t, ok := c.(*ast.Text); ok && entering {
			sb.Write(t.Segment.Value(src))
		}
		return ast.WalkContinue, nil
	})
	return strings.Join(strings.Fields(sb.String()), " ") // a code span may wrap a line
}

// names is what the lab has, by kind.
type names struct {
	settingPrefixes []string            // "outbox", "saga", …: a dotted name starting so is meant as a setting
	queues          map[string]bool     // every queue and exchange on the map
	metrics         string              // every rule and panel expression, concatenated
	grafana         []string            // dashboard uids
	tables          map[string][]string // table → the services whose migrations create it (the monolith has a products too)
}

func labNames(t *testing.T) names {
	t.Helper()
	n := names{queues: map[string]bool{}, tables: map[string][]string{}}
	migrations, err := filepath.Glob("../services/*/migrations/*.sql")
	if err != nil || len(migrations) == 0 {
		t.Fatalf("the services' migrations: %v %v", migrations, err)
	}
	for _, m := range migrations {
		b, err := os.ReadFile(m)
		if err != nil {
			t.Fatal(err)
		}
		svc := filepath.Base(filepath.Dir(filepath.Dir(m)))
		for _, c := range createTable.FindAllSubmatch(b, -1) {
			n.tables[string(c[1])] = append(n.tables[string(c[1])], svc)
		}
	}
	for _, d := range control.Defs() {
		p, _, _ := strings.Cut(d.Key, ".")
		if !slices.Contains(n.settingPrefixes, p) {
			n.settingPrefixes = append(n.settingPrefixes, p)
		}
	}
	for _, node := range views.ShopArch().Nodes {
		if node.Kind == "queue" || node.Kind == "exchange" {
			n.queues[node.Name] = true
		}
	}
	for _, svc := range control.QueueServices {
		n.queues[svc+".dlq"] = true // the map draws a service's DLQ beside it, not as a node
	}
	rules, err := observability.RuleExprs(observability.Assets())
	if err != nil {
		t.Fatal(err)
	}
	var all strings.Builder
	for _, r := range rules {
		all.WriteString(r.Name + " " + r.Expr + "\n")
	}
	panels, err := observability.PanelQueries(observability.Assets())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range panels {
		all.WriteString(p.Expr + "\n")
	}
	n.metrics = all.String()
	err = fs.WalkDir(observability.Assets(), ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".json") || !strings.Contains(path, "grafana") {
			return err
		}
		b, err := fs.ReadFile(observability.Assets(), path)
		if m := grafanaUID.FindSubmatch(b); err == nil && m != nil {
			n.grafana = append(n.grafana, string(m[1]))
		}
		return err
	})
	if err != nil || len(n.grafana) == 0 {
		t.Fatalf("Grafana dashboards: %v %v", n.grafana, err)
	}
	return n
}

var (
	bareURL      = regexp.MustCompile(`https?://[^\s)>\]*` + "`" + `]+`)
	createTable  = regexp.MustCompile(`(?i)CREATE TABLE (?:IF NOT EXISTS )?([a-z_]+)`)
	grafanaUID   = regexp.MustCompile(`"uid":\s*"(microlab-[a-z0-9-]+)"`)
	dotted       = regexp.MustCompile(`^[a-z]+(\.[a-z_]+)+$`)
	snake        = regexp.MustCompile(`^[a-z]+(_[a-z0-9]+)+$`)
	settingsCmd  = regexp.MustCompile(`^(?:go run \./)?lab settings (?:set )?([^ =]+)=(\S+)$`)
	instanceName = regexp.MustCompile(`^([a-z]+)-(\d+)$`)
	spanName     = regexp.MustCompile(`^(process|publish|outbox) (\S+)$`)
	// OpenTelemetry's attribute names the waterfall shows (http.response.status_code),
	// which share their first word with settings (http.timeout, db.topology).
	spanAttribute = regexp.MustCompile(`^(http\.(request|response|route)|url|server|client|messaging|network|rpc|db\.(system|statement|operation|query|namespace|collection))(\.|$)`)
)

// checkName: a name a text gives (a code span or bold) is real, if it is of a kind the
// lab names: a setting (and a value), a fault kind, a message type, a queue, a span
// about one, a metric. Anything else (prose in bold, a card number) passes.
func (n names) checkName(s string) error {
	if m := settingsCmd.FindStringSubmatch(s); m != nil {
		if _, err := control.Validate(m[1], m[2]); err != nil {
			return err
		}
		return nil
	}
	if m := spanName.FindStringSubmatch(s); m != nil {
		if !contracts.Known(m[2]) && !n.queues[m[2]] && m[2] != "lab.poison" && m[2] != "…" {
			return fmt.Errorf("no message type or queue %q: no such span", m[2])
		}
		return nil
	}
	if m := instanceName.FindStringSubmatch(s); m != nil { // payments-2
		if i, _ := strconv.Atoi(m[2]); !slices.Contains(control.FaultServices, m[1]) || i < 1 || i > control.MaxScale {
			return fmt.Errorf("no instance %s: instances are <service>-1 … <service>-%d of %s", s, control.MaxScale,
				strings.Join(control.FaultServices, ", "))
		}
		return nil
	}
	if dotted.MatchString(s) {
		p, _, _ := strings.Cut(s, ".")
		if !slices.Contains(n.settingPrefixes, p) {
			return nil // payment.authorized, lab.fault: not meant as a setting
		}
		svc, table, _ := strings.Cut(s, ".")
		if _, ok := control.Lookup(s); ok || contracts.Known(s) || n.queues[s] || spanAttribute.MatchString(s) || slices.Contains(n.tables[table], svc) {
			return nil
		}
		return fmt.Errorf("no such setting (nor message type, nor queue); settings: %s", settingKeys())
	}
	if snake.MatchString(s) {
		switch {
		case slices.Contains(control.FaultKinds, s):
		case slices.Contains([]string{contracts.ReasonPaymentDeclined, contracts.ReasonOutOfStock,
			contracts.ReasonShippingFailed, contracts.ReasonTimeout, "card_declined", "schema_coupling"}, s):
		case n.charts(s): // a metric the lab charts
		case len(n.tables[s]) > 0: // a table (order_items)
		case metricWord.MatchString(s):
			return fmt.Errorf("no rule or Grafana panel of the lab uses metric %s", s)
		default:
			return fmt.Errorf("not a fault kind (%s), a cancel reason or a metric", strings.Join(control.FaultKinds, ", "))
		}
	}
	return nil
}

// charts reports whether a rule or panel uses metric m (a histogram through its
// _bucket, _count or _sum series).
func (n names) charts(m string) bool {
	return regexp.MustCompile(`\b` + regexp.QuoteMeta(m) + `(_bucket|_count|_sum)?\b`).MatchString(n.metrics)
}

var metricWord = regexp.MustCompile(`_(total|seconds|messages|bytes|ratio|count|sum|bucket|state|info)$`)

func settingKeys() string {
	var keys []string
	for _, d := range control.Defs() {
		keys = append(keys, d.Key)
	}
	return strings.Join(keys, ", ")
}

// checkLink: dest, in exercise id's texts, resolves. f is a dashboard to ask (nil: only
// what needs no dashboard is checked, and dashboard links to pages it does not route fail).
func (n names) checkLink(t *testing.T, f *fixture, id, dest string) error {
	t.Helper()
	u, err := url.Parse(dest)
	if err != nil {
		return err
	}
	switch {
	case u.Scheme == "" && u.Host == "":
		if u.Path == "" {
			return nil // #fragment
		}
		p := filepath.Join("..", "exercises", id, filepath.FromSlash(u.Path))
		if _, err := os.Stat(p); err != nil {
			return fmt.Errorf("no file %s in the repository", filepath.Join("exercises", id, u.Path))
		}
		return nil
	case u.Host == "localhost:8080" || u.Host == "127.0.0.1:8080":
		path := u.Path
		if path == "" {
			path = "/"
		}
		if u.RawQuery != "" {
			path += "?" + u.RawQuery
		}
		if f == nil {
			if !slices.Contains([]string{"/", "/traces", "/events", "/sagas", "/charts", "/switchboard", "/shop", "/exercises"}, u.Path) {
				return fmt.Errorf("not a dashboard view")
			}
			return nil
		}
		if code, body := call(t, f, "GET", path, ""); code != 200 {
			return fmt.Errorf("the dashboard answers %d: %.200s", code, body)
		}
		return nil
	case u.Host == "localhost:3000":
		if u.Path == "" || u.Path == "/" {
			return nil
		}
		uid, ok := strings.CutPrefix(u.Path, "/d/")
		uid, _, _ = strings.Cut(uid, "/")
		if !ok || !slices.Contains(n.grafana, uid) {
			return fmt.Errorf("not one of the lab's Grafana dashboards (/d/<uid>: %s)", strings.Join(n.grafana, ", "))
		}
		return nil
	case u.Host == "localhost:16686":
		if u.Path == "" || u.Path == "/" || u.Path == "/search" || strings.HasPrefix(u.Path, "/trace/") {
			return nil
		}
		return fmt.Errorf("not a page of Jaeger's UI (/search, /trace/<id>)")
	}
	return fmt.Errorf("links off the machine: a class may be offline; link the docs/ page instead")
}
