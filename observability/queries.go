package observability

import (
	"encoding/json"
	"fmt"
	"io/fs"
	"path"
	"strings"

	"gopkg.in/yaml.v3"
)

// PanelQuery is one query of a Grafana dashboard panel: Dashboard is the dashboard's
// uid (Grafana links are /d/<uid>), Panel the panel's title, RefID the target's refId,
// Expr its PromQL as written (with $__rate_interval & co.: see ExpandGrafanaVars),
// PanelID the panel's id (a link to the panel alone is /d/<uid>?viewPanel=<id>).
type PanelQuery struct {
	Dashboard, Panel, RefID, Expr string
	PanelID                       int
}

// dashboard is the part of Grafana's dashboard JSON that PanelQueries reads.
type dashboard struct {
	UID    string  `json:"uid"`
	Title  string  `json:"title"`
	Panels []panel `json:"panels"`
}

type panel struct {
	ID      int      `json:"id"`
	Type    string   `json:"type"`
	Title   string   `json:"title"`
	Targets []target `json:"targets"`
	Panels  []panel  `json:"panels"` // a collapsed row's panels
}

type target struct {
	RefID string `json:"refId"`
	Expr  string `json:"expr"`
}

// PanelQueries returns every query of the dashboards grafana/dashboards/*.json in fsys
// (use Assets()), panels nested in collapsed rows included, in file and panel order.
// Targets without an expression are skipped.
func PanelQueries(fsys fs.FS) ([]PanelQuery, error) {
	files, err := fs.Glob(fsys, "grafana/dashboards/*.json")
	if err != nil {
		return nil, err
	}
	var out []PanelQuery
	for _, f := range files {
		d, err := readDashboard(fsys, f)
		if err != nil {
			return nil, err
		}
		name := d.UID
		if name == "" {
			name = strings.TrimSuffix(path.Base(f), ".json")
		}
		var walk func([]panel)
		walk = func(ps []panel) {
			for _, p := range ps {
				for _, t := range p.Targets {
					if strings.TrimSpace(t.Expr) != "" {
						out = append(out, PanelQuery{Dashboard: name, Panel: p.Title, RefID: t.RefID, Expr: t.Expr, PanelID: p.ID})
					}
				}
				walk(p.Panels)
			}
		}
		walk(d.Panels)
	}
	return out, nil
}

func readDashboard(fsys fs.FS, name string) (dashboard, error) {
	var d dashboard
	b, err := fs.ReadFile(fsys, name)
	if err != nil {
		return d, err
	}
	if err := json.Unmarshal(b, &d); err != nil {
		return d, fmt.Errorf("%s: %w", name, err)
	}
	return d, nil
}

// RuleExpr is one rule of the Prometheus rule files: File is its path in the assets
// (prometheus/rules/x.yml), Name the recorded metric or the alert's name, Kind "record"
// or "alert".
type RuleExpr struct{ File, Group, Name, Kind, Expr string }

type ruleFile struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []struct {
			Record string `yaml:"record"`
			Alert  string `yaml:"alert"`
			Expr   string `yaml:"expr"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

// RuleExprs returns every rule of prometheus/rules/*.yml in fsys (use Assets()), in
// file, group and rule order.
func RuleExprs(fsys fs.FS) ([]RuleExpr, error) {
	files, err := fs.Glob(fsys, "prometheus/rules/*.yml")
	if err != nil {
		return nil, err
	}
	var out []RuleExpr
	for _, f := range files {
		b, err := fs.ReadFile(fsys, f)
		if err != nil {
			return nil, err
		}
		var rf ruleFile
		if err := yaml.Unmarshal(b, &rf); err != nil {
			return nil, fmt.Errorf("%s: %w", f, err)
		}
		for _, g := range rf.Groups {
			for _, r := range g.Rules {
				e := RuleExpr{File: f, Group: g.Name, Name: r.Record, Kind: "record", Expr: strings.TrimSpace(r.Expr)}
				if r.Alert != "" {
					e.Name, e.Kind = r.Alert, "alert"
				}
				if e.Name == "" {
					return nil, fmt.Errorf("%s: group %s: a rule with neither record nor alert", f, g.Name)
				}
				out = append(out, e)
			}
		}
	}
	return out, nil
}

var grafanaVars = strings.NewReplacer(
	"${__rate_interval}", "1m",
	"$__rate_interval", "1m",
	"${__interval}", "1m",
	"$__interval", "1m",
)

// ExpandGrafanaVars replaces the Grafana variables the dashboards may use
// ($__rate_interval, $__interval, with or without braces) with 1m, so that a panel's
// query can be sent to Prometheus as is.
func ExpandGrafanaVars(expr string) string { return grafanaVars.Replace(expr) }
