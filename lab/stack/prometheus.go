package stack

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path"
	"path/filepath"
	"strconv"

	"microlab/lab/supervisor"
	"microlab/observability"
)

// Prometheus is one Prometheus process with the lab's committed native configuration
// (observability/prometheus/prometheus.native.yml) and rules, scraping the targets
// WriteTargets lists (file-based discovery: it notices a new list within seconds, no
// restart). Only its web port listens, on Host.
type Prometheus struct {
	Bin       string // the prometheus binary (FindPrometheus)
	Dir       string // runtime directory: config, rules/, targets/, data/, prometheus.log
	Host      string // bind address (127.0.0.1)
	Port      int    // web UI and API
	Retention string // --storage.tsdb.retention.time ("" = 1d: a lab, not an archive)
}

// Prometheus describes this lab's Prometheus: port 9090 shifted by the offset.
func (c Config) Prometheus(bin, dir string) Prometheus {
	return Prometheus{Bin: bin, Dir: dir, Host: c.host(), Port: PrometheusPort + c.PortOffset}
}

// URL is the base URL of the UI and API (/api/v1/query, /api/v1/targets).
func (p Prometheus) URL() string { return "http://" + net.JoinHostPort(p.Host, strconv.Itoa(p.Port)) }

// ConfigFile, TargetsFile and LogFile are where Start and WriteTargets write.
func (p Prometheus) ConfigFile() string  { return filepath.Join(p.Dir, "prometheus.yml") }
func (p Prometheus) TargetsFile() string { return filepath.Join(p.Dir, "targets", "lab.json") }
func (p Prometheus) LogFile() string     { return filepath.Join(p.Dir, "prometheus.log") }

// TargetGroup is one entry of a file_sd targets file.
type TargetGroup struct {
	Targets []string          `json:"targets"`
	Labels  map[string]string `json:"labels,omitempty"`
}

// Targets is what this lab's Prometheus scrapes: every instance (scaled ones too) as
// job <service name>, and RabbitMQ's per-object metrics as job rabbitmq.
func (c Config) Targets(scale map[string]int) ([]TargetGroup, error) {
	insts, err := c.Instances(scale)
	if err != nil {
		return nil, err
	}
	out := make([]TargetGroup, 0, len(insts)+1)
	for _, in := range insts {
		out = append(out, TargetGroup{Targets: []string{in.Addr}, Labels: map[string]string{"job": in.Service.Name}})
	}
	return append(out, TargetGroup{
		Targets: []string{cmp.Or(c.RabbitMetricsAddr, RabbitMQMetricsAddr)},
		Labels:  map[string]string{"job": "rabbitmq", "__metrics_path__": "/metrics/per-object"},
	}), nil
}

// WriteTargets replaces the targets file, atomically (Prometheus never reads half a
// file). It works before Start and while Prometheus runs.
func (p Prometheus) WriteTargets(groups []TargetGroup) error {
	if groups == nil {
		groups = []TargetGroup{}
	}
	b, err := json.MarshalIndent(groups, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(p.TargetsFile()), 0o755); err != nil {
		return fmt.Errorf("prometheus targets: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(p.TargetsFile()), ".lab-*.tmp") // not *.json: not read
	if err != nil {
		return fmt.Errorf("prometheus targets: %w", err)
	}
	_, werr := tmp.Write(append(b, '\n'))
	cerr := tmp.Close()
	if err := errors.Join(werr, cerr); err != nil {
		_ = os.Remove(tmp.Name())
		return fmt.Errorf("prometheus targets: %w", err)
	}
	if err := os.Rename(tmp.Name(), p.TargetsFile()); err != nil {
		_ = os.Remove(tmp.Name())
		return fmt.Errorf("prometheus targets: %w", err)
	}
	return nil
}

// writeConfig copies the committed native config and rules into Dir (rules/ replaced
// whole, so a rule file deleted from the repository does not linger).
func (p Prometheus) writeConfig() error {
	assets := observability.Assets()
	conf, err := fs.ReadFile(assets, "prometheus/prometheus.native.yml")
	if err != nil {
		return err
	}
	if err := os.WriteFile(p.ConfigFile(), conf, 0o644); err != nil {
		return err
	}
	rules := filepath.Join(p.Dir, "rules")
	if err := os.RemoveAll(rules); err != nil {
		return err
	}
	if err := os.MkdirAll(rules, 0o755); err != nil {
		return err
	}
	files, err := fs.Glob(assets, "prometheus/rules/*.yml")
	if err != nil {
		return err
	}
	for _, f := range files {
		b, err := fs.ReadFile(assets, f)
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(rules, path.Base(f)), b, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// Proc writes the configuration and rules into Dir (made absolute, created if need be;
// an existing targets file is kept) and returns the process to supervise: instance
// "prometheus", healthy when /-/ready answers, output to LogFile.
func (p *Prometheus) Proc() (supervisor.Proc, error) {
	if p.Bin == "" {
		return supervisor.Proc{}, errors.New("prometheus: no binary")
	}
	dir, err := absDir(p.Dir)
	if err != nil {
		return supervisor.Proc{}, fmt.Errorf("prometheus: %w", err)
	}
	p.Dir = dir
	if err := p.writeConfig(); err != nil {
		return supervisor.Proc{}, fmt.Errorf("prometheus config: %w", err)
	}
	retention := p.Retention
	if retention == "" {
		retention = "1d"
	}
	return supervisor.Proc{
		Name:     "prometheus",
		Instance: "prometheus",
		Path:     p.Bin,
		Args: []string{
			"--config.file=" + p.ConfigFile(),
			"--storage.tsdb.path=" + filepath.Join(p.Dir, "data"),
			"--storage.tsdb.retention.time=" + retention,
			"--web.listen-address=" + net.JoinHostPort(p.Host, strconv.Itoa(p.Port)),
		},
		Dir:       p.Dir,
		HealthURL: p.URL() + "/-/ready",
		LogFile:   p.LogFile(),
	}, nil
}

// Start checks that the port is free, starts Prometheus under sup (restarted if it
// crashes, stopped with sup.Stop("prometheus") or StopAll) and returns once it is ready
// (about 0.1s), bounded by ctx. Write the targets before or after, with WriteTargets. On
// failure a process already started is left to the caller, who owns sup. Start makes
// Dir absolute.
func (p *Prometheus) Start(ctx context.Context, sup *supervisor.Supervisor) error {
	if err := portsFree(p.Host, p.Port); err != nil {
		return fmt.Errorf("prometheus: %w", err)
	}
	proc, err := p.Proc()
	if err != nil {
		return err
	}
	return startAndWait(ctx, sup, proc)
}
