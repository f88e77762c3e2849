package exercises

import (
	"context"
	"fmt"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"microlab/lab/stack"
	"microlab/services/platform/testenv"
)

// A promql check against a real Prometheus scraping a real client_golang registry
// every second: it does not hold while the condition is false, nor as soon as it turns
// true (it must hold for all of held), and holds once it has.
func TestPromQLCheckAgainstPrometheus(t *testing.T) {
	t.Parallel()
	bin, err := stack.FindPrometheus()
	if err != nil {
		testenv.Missing(t, "Prometheus", stack.FixPrometheus, err)
	}
	reg := prometheus.NewRegistry()
	probe := prometheus.NewGauge(prometheus.GaugeOpts{Name: "lab_exercise_probe", Help: "What the test's check reads."})
	reg.MustRegister(probe)
	probe.Set(1)
	target := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	t.Cleanup(target.Close)
	u, _ := url.Parse(target.URL)

	dir := t.TempDir()
	cfg := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf("global: {scrape_interval: 1s, evaluation_interval: 1s}\n"+
		"scrape_configs:\n  - job_name: probe\n    static_configs: [{targets: ['%s']}]\n", u.Host)), 0o644); err != nil {
		t.Fatal(err)
	}
	addr := "127.0.0.1:" + strconv.Itoa(testenv.FreePort(t))
	logf, err := os.Create(filepath.Join(dir, "prometheus.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "--config.file="+cfg, "--storage.tsdb.path="+filepath.Join(dir, "data"), "--web.listen-address="+addr)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill() // ours, by its pid
		_ = cmd.Wait()
		_ = logf.Close()
	})
	api := PrometheusAPI{URL: "http://" + addr}
	ctx := context.Background()
	deadline := time.Now().Add(90 * time.Second)
	for {
		s, err := api.Query(ctx, `up{job="probe"} == 1`)
		if err == nil && len(s) == 1 {
			break
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(logf.Name())
			t.Fatalf("prometheus never scraped the probe (%v, %v); log:\n%s", s, err, log)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if s, err := api.Query(ctx, "scalar(lab_exercise_probe)"); err != nil || len(s) != 1 || s[0].Value != 1 {
		t.Fatalf("scalar: %+v, %v", s, err)
	}
	if _, err := api.Query(ctx, "sum("); err == nil {
		t.Error("a bad expression: no error")
	}

	tl := newTestLab(t)
	tl.lab.Prometheus = api
	ex := exercise(t, "96-promql", `
steps:
  - id: raise-it
    instructions: Raise the probe above 5 and keep it there.
    check: {kind: promql, expr: lab_exercise_probe > 5, held: 3s, within: 30s}
    missing: The probe has not stayed above 5 for 3 seconds yet.
    solution:
      - wait: 1ms
`)
	e := tl.engine(t, ex)
	if _, err := e.Start(ctx, ex.ID, "test"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3500 * time.Millisecond) // past held since the start: only the value keeps it from holding
	if st, err := e.Status(ctx, ex.ID); err != nil || st.Complete || len(st.Problems) > 0 {
		t.Fatalf("holds while the probe is 1: %+v, %v", st, err)
	}
	probe.Set(10)
	if st, err := e.Status(ctx, ex.ID); err != nil || st.Complete {
		t.Fatalf("holds before the probe was above 5 for 3s: %+v, %v", st, err)
	}
	t0 := time.Now()
	st, err := e.Evaluate(ctx, ex.ID)
	if err != nil || !st.Complete {
		t.Fatalf("does not hold after: %+v, %v", st, err)
	}
	if took := time.Since(t0); took < 2*time.Second {
		t.Errorf("held after %s, before its 3s window could be full", took)
	}
	if ev := st.Run.Steps[0].Evidence[0]; ev.Kind != EvidencePromQL || ev.Value != "10" {
		t.Errorf("evidence %+v", ev)
	}
}
