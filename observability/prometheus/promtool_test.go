// Package prometheus_test checks the Prometheus configs, rules and rule unit tests in
// this directory with promtool. There is no Go code here besides this test.
package prometheus_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"microlab/observability"
)

const missingPromtool = "promtool not found: install it with `apt-get install -y prometheus`"

func promtool(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal(missingPromtool)
		}
		t.Skip(missingPromtool)
	}
	return p
}

// run runs promtool in dir and fails the test with its output if it fails.
func run(t *testing.T, bin, dir string, args ...string) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	t.Logf("promtool %s:\n%s", strings.Join(args, " "), out)
}

func glob(t *testing.T, pattern string) []string {
	t.Helper()
	files, err := filepath.Glob(pattern)
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatalf("no files match %s", pattern)
	}
	return files
}

func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// The native config discovers its targets from targets/*.json, written by the lab;
// check it in a copy with the example targets file in place, so that promtool checks
// the example's format too.
func TestCheckNativeConfig(t *testing.T) {
	bin := promtool(t)
	dir := t.TempDir()
	copyFile(t, "prometheus.native.yml", filepath.Join(dir, "prometheus.native.yml"))
	for _, f := range glob(t, "rules/*.yml") {
		copyFile(t, f, filepath.Join(dir, f))
	}
	copyFile(t, "targets.example.json", filepath.Join(dir, "targets", "lab.json"))
	run(t, bin, dir, "check", "config", "prometheus.native.yml")
}

func TestCheckComposeConfig(t *testing.T) {
	run(t, promtool(t), ".", "check", "config", "prometheus.compose.yml")
}

func TestCheckRules(t *testing.T) {
	run(t, promtool(t), ".", append([]string{"check", "rules"}, glob(t, "rules/*.yml")...)...)
}

func TestRuleUnitTests(t *testing.T) {
	run(t, promtool(t), ".", append([]string{"test", "rules"}, glob(t, "tests/*.yml")...)...)
}

// The dashboards' queries parse: promtool checks them as the expressions of recording
// rules (with $__rate_interval & co. replaced as the live test does).
func TestDashboardQueriesParse(t *testing.T) {
	bin := promtool(t)
	qs, err := observability.PanelQueries(observability.Assets())
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	b.WriteString("groups:\n  - name: dashboards\n    rules:\n")
	for i, q := range qs {
		fmt.Fprintf(&b, "      # %s / %s / %s\n      - record: dashboard:query:%d\n        expr: %s\n",
			q.Dashboard, q.Panel, q.RefID, i, strconv.Quote(observability.ExpandGrafanaVars(q.Expr)))
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "dashboards.yml"), []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	run(t, bin, dir, "check", "rules", "dashboards.yml")
}
