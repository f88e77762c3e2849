package observability_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"testing/fstest"

	"gopkg.in/yaml.v3"

	"microlab/observability"
)

var promDS = map[string]any{"type": "prometheus", "uid": "prometheus"}

// Every dashboard parses and is well formed: uid, title, unique panel ids, every panel
// querying the provisioned Prometheus datasource with only the Grafana variables the
// live test knows how to replace.
func TestDashboards(t *testing.T) {
	files, err := fs.Glob(observability.Assets(), "grafana/dashboards/*.json")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 3 {
		t.Fatalf("%d dashboards, want at least 3: %v", len(files), files)
	}
	uids := map[string]string{}
	for _, f := range files {
		b, err := fs.ReadFile(observability.Assets(), f)
		if err != nil {
			t.Fatal(err)
		}
		var d map[string]any
		if err := json.Unmarshal(b, &d); err != nil {
			t.Errorf("%s: %v", f, err)
			continue
		}
		uid, _ := d["uid"].(string)
		title, _ := d["title"].(string)
		if uid == "" || title == "" {
			t.Errorf("%s: uid %q, title %q: both are required", f, uid, title)
		}
		if other, dup := uids[uid]; dup {
			t.Errorf("%s: uid %q already used by %s", f, uid, other)
		}
		uids[uid] = f
		if v, _ := d["schemaVersion"].(float64); v < 36 {
			t.Errorf("%s: schemaVersion %v, want a current one (39)", f, d["schemaVersion"])
		}
		if tmpl, ok := d["templating"].(map[string]any); ok {
			if l, _ := tmpl["list"].([]any); len(l) > 0 {
				t.Errorf("%s: dashboard variables are not allowed (the live test cannot fill them)", f)
			}
		}
		ids := map[float64]string{}
		panels := 0
		var walk func(ps []any)
		walk = func(ps []any) {
			for _, pv := range ps {
				p, _ := pv.(map[string]any)
				ptitle, _ := p["title"].(string)
				where := fmt.Sprintf("%s: panel %q", f, ptitle)
				id, ok := p["id"].(float64)
				if !ok {
					t.Errorf("%s: no id", where)
				} else if other, dup := ids[id]; dup {
					t.Errorf("%s: id %v already used by panel %q", where, id, other)
				}
				ids[id] = ptitle
				if nested, ok := p["panels"].([]any); ok {
					walk(nested)
				}
				if p["type"] == "row" {
					continue
				}
				panels++
				if ptitle == "" {
					t.Errorf("%s: panel %v has no title", f, id)
				}
				if !reflect.DeepEqual(p["datasource"], promDS) {
					t.Errorf("%s: datasource %v, want %v", where, p["datasource"], promDS)
				}
				targets, _ := p["targets"].([]any)
				if len(targets) == 0 {
					t.Errorf("%s: no targets", where)
				}
				refs := map[string]bool{}
				for _, tv := range targets {
					tg, _ := tv.(map[string]any)
					expr, _ := tg["expr"].(string)
					ref, _ := tg["refId"].(string)
					if strings.TrimSpace(expr) == "" || ref == "" || refs[ref] {
						t.Errorf("%s: target %q: want an expr and a unique refId", where, ref)
					}
					refs[ref] = true
					if !reflect.DeepEqual(tg["datasource"], promDS) {
						t.Errorf("%s: target %s: datasource %v, want %v", where, ref, tg["datasource"], promDS)
					}
					if e := observability.ExpandGrafanaVars(expr); strings.Contains(e, "$") {
						t.Errorf("%s: target %s uses a variable other than $__rate_interval/$__interval: %s", where, ref, expr)
					}
				}
			}
		}
		ps, _ := d["panels"].([]any)
		walk(ps)
		if panels == 0 {
			t.Errorf("%s: no panels", f)
		}
	}
}

func TestGrafanaProvisioning(t *testing.T) {
	var ds struct {
		Datasources []struct {
			UID, Type, URL string
			IsDefault      bool `yaml:"isDefault"`
		}
	}
	readYAML(t, "grafana/provisioning/datasources/datasources.yml", &ds)
	got := map[string]string{}
	for _, d := range ds.Datasources {
		got[d.UID] = d.Type + " " + d.URL
		if d.UID == "prometheus" && !d.IsDefault {
			t.Error("the prometheus datasource should be the default")
		}
	}
	want := map[string]string{"prometheus": "prometheus http://prometheus:9090", "jaeger": "jaeger http://jaeger:16686"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("datasources %v, want %v", got, want)
	}
	var prov struct {
		Providers []struct {
			Type    string
			Options struct{ Path string }
		}
	}
	readYAML(t, "grafana/provisioning/dashboards/dashboards.yml", &prov)
	if len(prov.Providers) != 1 || prov.Providers[0].Type != "file" || prov.Providers[0].Options.Path != "/var/lib/grafana/dashboards" {
		t.Errorf("dashboard providers %+v, want one file provider reading /var/lib/grafana/dashboards", prov.Providers)
	}
}

func readYAML(t *testing.T, name string, v any) {
	t.Helper()
	b, err := fs.ReadFile(observability.Assets(), name)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
}

func TestPanelQueries(t *testing.T) {
	qs, err := observability.PanelQueries(observability.Assets())
	if err != nil {
		t.Fatal(err)
	}
	dashboards := map[string]int{}
	panels := map[string]bool{}
	for _, q := range qs {
		dashboards[q.Dashboard]++
		panels[q.Dashboard+"/"+q.Panel] = true
		if q.RefID == "" || q.Expr == "" {
			t.Errorf("%+v: empty refId or expr", q)
		}
	}
	for _, uid := range []string{"microlab-shop-overview", "microlab-checkout-saga", "microlab-messaging"} {
		if dashboards[uid] == 0 {
			t.Errorf("no queries from dashboard %s (have %v)", uid, dashboards)
		}
	}
	// A panel inside a collapsed row.
	if !panels["microlab-messaging/Publish errors"] {
		t.Error("PanelQueries missed the panels of the collapsed row of microlab-messaging")
	}

	fsys := fstest.MapFS{"grafana/dashboards/x.json": {Data: []byte(`{"uid":"x","panels":[
		{"id":1,"type":"timeseries","title":"top","targets":[{"refId":"A","expr":"up"},{"refId":"B","expr":""}]},
		{"id":2,"type":"row","title":"r","collapsed":true,"panels":[
			{"id":3,"type":"stat","title":"nested","targets":[{"refId":"A","expr":"sum(up)"}]}]}]}`)},
		"grafana/dashboards/notes.md": {Data: []byte("not a dashboard")}}
	got, err := observability.PanelQueries(fsys)
	if err != nil {
		t.Fatal(err)
	}
	want := []observability.PanelQuery{{"x", "top", "A", "up", 1}, {"x", "nested", "A", "sum(up)", 3}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("PanelQueries = %+v, want %+v", got, want)
	}
	if _, err := observability.PanelQueries(fstest.MapFS{"grafana/dashboards/bad.json": {Data: []byte("{")}}); err == nil {
		t.Error("PanelQueries accepted a broken dashboard")
	}
}

func TestRuleExprs(t *testing.T) {
	rules, err := observability.RuleExprs(observability.Assets())
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[string]int{}
	names := map[string]bool{}
	for _, r := range rules {
		kinds[r.Kind]++
		if r.Kind != "record" && r.Kind != "alert" || r.Name == "" || r.Expr == "" || r.Group == "" ||
			!strings.HasPrefix(r.File, "prometheus/rules/") {
			t.Errorf("malformed %+v", r)
		}
		if names[r.Name] {
			t.Errorf("%s: %s defined twice", r.File, r.Name)
		}
		names[r.Name] = true
	}
	if kinds["record"] == 0 || kinds["alert"] == 0 {
		t.Errorf("rules by kind %v, want both recording and alerting rules", kinds)
	}
	for _, want := range []string{"HTTPHighErrorRate", "SagaHighCompensationRatio", "MessagesDeadLettered",
		"DeadLetterQueueGrowing", "OutboxBacklogStuck", "ScrapeTargetDown", "CheckoutLatencySLOFastBurn"} {
		if !names[want] {
			t.Errorf("no alert %s", want)
		}
	}
}

// Each alert is exercised by a promtool unit test (prometheus/tests/*.yml, run by
// prometheus/promtool_test.go).
func TestAlertsHavePromtoolTests(t *testing.T) {
	rules, err := observability.RuleExprs(observability.Assets())
	if err != nil {
		t.Fatal(err)
	}
	files, err := fs.Glob(observability.Assets(), "prometheus/tests/*.yml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no promtool tests embedded (%v)", err)
	}
	var all strings.Builder
	for _, f := range files {
		b, err := fs.ReadFile(observability.Assets(), f)
		if err != nil {
			t.Fatal(err)
		}
		all.Write(b)
	}
	for _, r := range rules {
		if r.Kind != "alert" {
			continue
		}
		if !regexp.MustCompile(`alertname:\s*` + regexp.QuoteMeta(r.Name) + `\s`).MatchString(all.String()) {
			t.Errorf("alert %s (%s) has no promtool test in prometheus/tests/", r.Name, r.File)
		}
	}
}

func TestExpandGrafanaVars(t *testing.T) {
	got := observability.ExpandGrafanaVars(`rate(a[$__rate_interval]) + rate(b[${__rate_interval}]) + rate(c[$__interval]) + rate(d[${__interval}])`)
	if want := `rate(a[1m]) + rate(b[1m]) + rate(c[1m]) + rate(d[1m])`; got != want {
		t.Errorf("got %s, want %s", got, want)
	}
}

// Every metric a panel or a rule reads is in the contract (docs/observability.md), or is
// a recording rule, `up`, or one of RabbitMQ's, Go's or the process's own metrics. A
// typo'd metric name would give a panel that is silently empty forever. And every
// histogram of the contract is charted: some panel shows its quantiles
// (histogram_quantile over its _bucket series), or nobody would see what it measures.
func TestQueriesUseContractMetrics(t *testing.T) {
	known, histograms := contractMetrics(t)
	rules, err := observability.RuleExprs(observability.Assets())
	if err != nil {
		t.Fatal(err)
	}
	type use struct {
		where, expr string
		panel       bool
	}
	var uses []use
	for _, r := range rules {
		if r.Kind == "record" {
			known[r.Name] = true
		}
		uses = append(uses, use{r.File + ": " + r.Name, r.Expr, false})
	}
	qs, err := observability.PanelQueries(observability.Assets())
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range qs {
		uses = append(uses, use{fmt.Sprintf("dashboard %s, panel %q, %s", q.Dashboard, q.Panel, q.RefID), q.Expr, true})
	}
	allowed := func(name string) bool {
		return known[name] || name == "up" || strings.HasPrefix(name, "rabbitmq_") ||
			strings.HasPrefix(name, "go_") || strings.HasPrefix(name, "process_")
	}
	seen := 0
	charted := map[string]bool{} // histograms whose quantiles a panel shows
	for _, u := range uses {
		metrics, funcs := identifiers(observability.ExpandGrafanaVars(u.expr))
		if len(metrics) == 0 {
			t.Errorf("%s: no metric found in %s", u.where, u.expr)
		}
		if u.panel && slices.Contains(funcs, "histogram_quantile") {
			for _, m := range metrics {
				if h, ok := strings.CutSuffix(m, "_bucket"); ok {
					charted[h] = true
				}
			}
		}
		for _, m := range metrics {
			seen++
			if !allowed(m) {
				t.Errorf("%s: unknown metric %q (not in docs/observability.md nor a recording rule) in %s", u.where, m, u.expr)
			}
		}
		for _, f := range funcs {
			if !promqlFuncs[f] {
				t.Errorf("%s: unknown PromQL function %q in %s", u.where, f, u.expr)
			}
		}
	}
	if seen == 0 {
		t.Fatal("no metric names extracted at all")
	}
	for _, h := range histograms {
		if !charted[h] {
			t.Errorf("histogram %s (docs/observability.md) has no panel: chart its quantiles, histogram_quantile(0.95, sum by (le) (rate(%s_bucket[$__rate_interval])))", h, h)
		}
	}
}

// contractMetrics reads the metric table of docs/observability.md: the names, and for
// histograms their _bucket, _sum and _count series (known), and the histograms' names.
func contractMetrics(t *testing.T) (known map[string]bool, histograms []string) {
	t.Helper()
	f, err := os.Open("../docs/observability.md")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	row := regexp.MustCompile("^\\| `([a-zA-Z_:][a-zA-Z0-9_:]*)` \\| ([a-z]+) \\|")
	known = map[string]bool{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		m := row.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		known[m[1]] = true
		if m[2] == "histogram" {
			histograms = append(histograms, m[1])
			for _, s := range []string{"_bucket", "_sum", "_count"} {
				known[m[1]+s] = true
			}
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	for _, must := range []string{"http_server_requests_total", "saga_duration_seconds_bucket", "messaging_dead_lettered_total"} {
		if !known[must] {
			t.Fatalf("could not read the metric table of docs/observability.md (no %s in %v)", must, known)
		}
	}
	return known, histograms
}

var (
	promStrings  = regexp.MustCompile("\"(?:[^\"\\\\]|\\\\.)*\"|'(?:[^'\\\\]|\\\\.)*'|`[^`]*`")
	promMatchers = regexp.MustCompile(`\{[^}]*\}`)
	promRanges   = regexp.MustCompile(`\[[^\]]*\]`)
	promGrouping = regexp.MustCompile(`\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)`)
	promToken    = regexp.MustCompile(`[A-Za-z0-9_:.]+(\s*\()?`)
)

// identifiers returns the metric names and the function names in a PromQL expression.
func identifiers(expr string) (metrics, funcs []string) {
	e := promStrings.ReplaceAllString(expr, `""`)
	e = promMatchers.ReplaceAllString(e, " ")
	e = promRanges.ReplaceAllString(e, " ")
	e = promGrouping.ReplaceAllString(e, " ")
	for _, m := range promToken.FindAllStringSubmatch(e, -1) {
		tok := strings.TrimRight(m[0], " \t\n(")
		switch {
		case tok == "" || tok[0] >= '0' && tok[0] <= '9' || tok[0] == '.':
			// a number or a duration
		case promKeywords[strings.ToLower(tok)]:
		case m[1] != "":
			funcs = append(funcs, tok)
		default:
			metrics = append(metrics, tok)
		}
	}
	sort.Strings(metrics)
	return metrics, funcs
}

var promKeywords = set("and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring",
	"group_left", "group_right", "inf", "nan", "atan2", "start", "end")

// promqlFuncs are PromQL's functions and aggregation operators.
var promqlFuncs = set(
	"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk", "topk", "quantile",
	"abs", "absent", "absent_over_time", "ceil", "changes", "clamp", "clamp_max", "clamp_min", "day_of_month",
	"day_of_week", "day_of_year", "days_in_month", "delta", "deriv", "exp", "floor", "histogram_quantile",
	"histogram_count", "histogram_sum", "histogram_fraction", "holt_winters", "hour", "idelta", "increase",
	"irate", "label_join", "label_replace", "ln", "log2", "log10", "minute", "month", "predict_linear", "rate",
	"resets", "round", "scalar", "sgn", "sort", "sort_desc", "sqrt", "time", "timestamp", "vector", "year",
	"avg_over_time", "min_over_time", "max_over_time", "sum_over_time", "count_over_time", "quantile_over_time",
	"stddev_over_time", "stdvar_over_time", "last_over_time", "present_over_time",
	"acos", "acosh", "asin", "asinh", "atan", "atanh", "cos", "cosh", "sin", "sinh", "tan", "tanh", "deg", "rad", "pi")

func set(s ...string) map[string]bool {
	m := map[string]bool{}
	for _, v := range s {
		m[v] = true
	}
	return m
}
