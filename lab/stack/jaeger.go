package stack

import (
	"bufio"
	"context"
	"debug/buildinfo"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"microlab/lab/supervisor"
)

// Jaeger is one Jaeger v2 all-in-one process (the OpenTelemetry-collector-based
// `jaeger` binary that tools/ pins) with in-memory storage, every port of it chosen
// here and bound to Host: an OTLP/HTTP receiver, the query HTTP API (and UI) and the
// query gRPC API. Nothing else listens: no OTLP/gRPC, Jaeger/Zipkin receivers, health
// check, zpages, expvar, sampling endpoints or internal-metrics port. Several run side
// by side, one per test.
//
// The UI assets are not part of the Go module, so the UI is a placeholder page; the
// HTTP API the UI uses (/api/traces/{id}, /api/traces?service=…, /api/services) works.
type Jaeger struct {
	Bin  string // the jaeger binary (JaegerBinary finds it, BuildJaeger builds it)
	Dir  string // runtime directory: jaeger.yaml and jaeger.log go here
	Host string // bind address of every port (127.0.0.1)

	OTLPHTTPPort  int // OTLP/HTTP receiver: POST /v1/traces
	QueryPort     int // HTTP API and UI
	QueryGRPCPort int // query gRPC API

	MaxTraces int // traces kept in memory, the oldest dropped first (0: DefaultJaegerMaxTraces)
}

// DefaultJaegerMaxTraces bounds Jaeger's in-memory store. It was 100000: the first lab
// bench found Jaeger at 1.9 GiB after its run's traffic (tens of thousands of checkout
// traces of ~85 spans each), most of the lab's memory; at 5000 it still held 469 MiB
// of the lab's 1152 after the soak (about 90 KiB a trace). 2000 traces are the last 3
// minutes at 10 checkouts/s: more than a learner pages through, and tests read back
// traces seconds old.
const DefaultJaegerMaxTraces = 2000

// jaegerMemLimit is Jaeger's soft memory limit (GOMEMLIMIT): the garbage collector
// works harder near it rather than letting the heap double past the store's size
// (~180 MiB at DefaultJaegerMaxTraces).
const jaegerMemLimit = "256MiB"

// Jaeger describes this lab's Jaeger: native ports (16686, 16685, 4318) shifted by the
// offset, so the services' OTEL_EXPORTER_OTLP_ENDPOINT (Env) reaches it.
func (c Config) Jaeger(bin, dir string) Jaeger {
	return Jaeger{
		Bin:           bin,
		Dir:           dir,
		Host:          c.host(),
		OTLPHTTPPort:  JaegerOTLPHTTPPort + c.PortOffset,
		QueryPort:     JaegerQueryPort + c.PortOffset,
		QueryGRPCPort: JaegerQueryGRPCPort + c.PortOffset,
	}
}

func (j Jaeger) addr(port int) string { return net.JoinHostPort(j.Host, strconv.Itoa(port)) }

// QueryURL is the base URL of the UI and HTTP API, e.g. QueryURL()+"/api/traces/"+id.
func (j Jaeger) QueryURL() string { return "http://" + j.addr(j.QueryPort) }

// OTLPEndpoint is the OTLP/HTTP base URL spans are sent to (an OTEL_EXPORTER_OTLP_ENDPOINT;
// the exporters append /v1/traces).
func (j Jaeger) OTLPEndpoint() string { return "http://" + j.addr(j.OTLPHTTPPort) }

// ConfigFile and LogFile are where Start writes the configuration and the process's
// output.
func (j Jaeger) ConfigFile() string { return filepath.Join(j.Dir, "jaeger.yaml") }
func (j Jaeger) LogFile() string    { return filepath.Join(j.Dir, "jaeger.log") }

// Config is the collector configuration: the jaeger_storage extension with one memory
// backend, the jaeger_query extension reading it (self-tracing off: it would export to
// the default OTLP endpoint, i.e. maybe another lab's Jaeger), one OTLP/HTTP receiver →
// batch → jaeger_storage_exporter pipeline, and internal metrics off (the collector
// would otherwise open :8888).
func (j Jaeger) Config() string {
	maxTraces := j.MaxTraces
	if maxTraces <= 0 {
		maxTraces = DefaultJaegerMaxTraces
	}
	return fmt.Sprintf(`# Written by lab (microlab/lab/stack): Jaeger v2 all-in-one, in-memory storage.
service:
  extensions: [jaeger_storage, jaeger_query]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [jaeger_storage_exporter]
  telemetry:
    resource:
      service.name: jaeger
    metrics:
      level: none
    logs:
      level: info

extensions:
  jaeger_storage:
    backends:
      memstore:
        memory:
          max_traces: %d
  jaeger_query:
    storage:
      traces: memstore
    enable_tracing: false
    http:
      endpoint: %q
    grpc:
      endpoint: %q

receivers:
  otlp:
    protocols:
      http:
        endpoint: %q

processors:
  batch:

exporters:
  jaeger_storage_exporter:
    trace_storage: memstore
`, maxTraces, j.addr(j.QueryPort), j.addr(j.QueryGRPCPort), j.addr(j.OTLPHTTPPort))
}

// Proc writes the configuration into Dir (made absolute, created if need be) and returns
// the process to supervise: instance "jaeger", healthy when the query API answers,
// output to LogFile.
func (j *Jaeger) Proc() (supervisor.Proc, error) {
	if j.Bin == "" {
		return supervisor.Proc{}, errors.New("jaeger: no binary")
	}
	dir, err := absDir(j.Dir)
	if err != nil {
		return supervisor.Proc{}, fmt.Errorf("jaeger: %w", err)
	}
	j.Dir = dir
	if err := os.WriteFile(j.ConfigFile(), []byte(j.Config()), 0o644); err != nil {
		return supervisor.Proc{}, fmt.Errorf("jaeger: %w", err)
	}
	return supervisor.Proc{
		Name:      "jaeger",
		Instance:  "jaeger",
		Path:      j.Bin,
		Args:      []string{"--config", j.ConfigFile()},
		Env:       []string{"GOMEMLIMIT=" + jaegerMemLimit},
		Dir:       j.Dir,
		HealthURL: j.QueryURL() + "/api/services",
		LogFile:   j.LogFile(),
	}, nil
}

// Start checks that Jaeger's ports are free, starts it under sup (restarted if it
// crashes, stopped with sup.Stop("jaeger") or StopAll) and returns once both its query
// API and its OTLP receiver answer (about 0.1s), bounded by ctx. On failure a process
// already started is left to the caller, who owns sup. Start makes Dir absolute.
func (j *Jaeger) Start(ctx context.Context, sup *supervisor.Supervisor) error {
	if err := portsFree(j.Host, j.OTLPHTTPPort, j.QueryPort, j.QueryGRPCPort); err != nil {
		return fmt.Errorf("jaeger: %w", err)
	}
	p, err := j.Proc()
	if err != nil {
		return err
	}
	return startAndWait(ctx, sup, p, j.addr(j.OTLPHTTPPort))
}

// Jaeger's build: the tools module (tools/ in the repository) pins it.
const (
	JaegerPackage = "github.com/jaegertracing/jaeger/cmd/jaeger"
	jaegerModule  = "github.com/jaegertracing/jaeger"
	// JaegerBuildTime is what a first build takes (a cached one: seconds).
	JaegerBuildTime = "about 4 minutes"
)

// JaegerBuildCommand is the shell command that builds binDir/jaeger from root/tools.
func JaegerBuildCommand(root, binDir string) string {
	return fmt.Sprintf("go build -C %s -o %s %s", filepath.Join(root, "tools"), filepath.Join(binDir, "jaeger"), JaegerPackage)
}

// jaegerNotBuilt is JaegerStale's answer when there is no binary at all.
const jaegerNotBuilt = "not built yet"

// JaegerStale says why binDir/jaeger must be (re)built from root/tools, or "" when it
// is up to date: built, from exactly the module versions tools/go.mod requires (read
// from the build information Go embeds in the binary, so a binary built by hand, by
// scripts/deps.sh or by lab up counts alike).
func JaegerStale(root, binDir string) (string, error) {
	bin := filepath.Join(binDir, "jaeger")
	info, err := buildinfo.ReadFile(bin)
	if errors.Is(err, fs.ErrNotExist) {
		return jaegerNotBuilt, nil
	}
	if err != nil {
		return fmt.Sprintf("unreadable build information (%v)", err), nil
	}
	want, err := requiredVersions(filepath.Join(root, "tools", "go.mod"))
	if err != nil {
		return "", err
	}
	if want[jaegerModule] == "" {
		return "", fmt.Errorf("%s does not require %s", filepath.Join(root, "tools", "go.mod"), jaegerModule)
	}
	mods := append([]*debug.Module{&info.Main}, info.Deps...)
	found := false
	for _, m := range mods {
		if m.Path == jaegerModule {
			found = true
		}
		if v, ok := want[m.Path]; ok && v != m.Version {
			return fmt.Sprintf("built with %s %s, tools/go.mod requires %s", m.Path, m.Version, v), nil
		}
	}
	if !found {
		return fmt.Sprintf("%s is not a Jaeger build", bin), nil
	}
	return "", nil
}

// requiredVersions reads the require directives of a go.mod: module path → version.
func requiredVersions(gomod string) (map[string]string, error) {
	f, err := os.Open(gomod)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line, _, _ := strings.Cut(sc.Text(), "//")
		fields := strings.Fields(line)
		if len(fields) > 0 && fields[0] == "require" {
			fields = fields[1:]
		}
		if len(fields) == 2 && strings.Contains(fields[0], ".") && strings.HasPrefix(fields[1], "v") {
			out[fields[0]] = fields[1]
		}
	}
	return out, sc.Err()
}

// BuildJaeger builds binDir/jaeger from root/tools unless it is up to date (see
// JaegerStale), with a progress line on out (see Progress).
func BuildJaeger(ctx context.Context, root, binDir string, out io.Writer) error {
	why, err := JaegerStale(root, binDir)
	if err != nil {
		return fmt.Errorf("jaeger: %w", err)
	}
	if why == "" {
		return nil
	}
	fmt.Fprintf(out, "build: jaeger → %s (%s)\n", binDir, why)
	// Minutes of compiling with nothing to show: the progress line says it is going.
	label := fmt.Sprintf("building Jaeger (first run only, %s)", JaegerBuildTime)
	if why != jaegerNotBuilt {
		label = fmt.Sprintf("rebuilding Jaeger (%s)", JaegerBuildTime)
	}
	p := StartProgress(out, label)
	err = goBuild(ctx, filepath.Join(root, "tools"), binDir, []string{JaegerPackage}, nil)
	p.Stop(err == nil)
	if err != nil {
		return fmt.Errorf("jaeger: %w", err)
	}
	return nil
}

// DefaultBinDir is where lab up builds binaries unless told otherwise: $LAB_BIN_DIR, or
// <user cache dir>/microlab/bin.
func DefaultBinDir() (string, error) {
	if d := os.Getenv("LAB_BIN_DIR"); d != "" {
		return d, nil
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("binary directory: %w (set LAB_BIN_DIR)", err)
	}
	return filepath.Join(cache, "microlab", "bin"), nil
}

// JaegerBinary returns the jaeger binary in DefaultBinDir, or an error saying it is not
// there (JaegerFix says how to build it; tests: testenv.Missing(t, "Jaeger",
// stack.JaegerFix(), err)).
func JaegerBinary() (string, error) {
	dir, err := DefaultBinDir()
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "jaeger")
	if _, err := os.Stat(bin); err != nil {
		return "", fmt.Errorf("no jaeger binary: %w", err)
	}
	return bin, nil
}

// JaegerFix is the command that builds the jaeger binary JaegerBinary looks for (with
// the repository found from the working directory).
func JaegerFix() string {
	dir, err := DefaultBinDir()
	if err != nil {
		dir = "~/.cache/microlab/bin"
	}
	root, err := moduleRootFrom(".")
	if err != nil {
		root = "<microlab repository>"
	}
	return JaegerBuildCommand(root, dir)
}

// moduleRootFrom finds the microlab module's root: dir or its nearest parent whose
// go.mod declares module microlab.
func moduleRootFrom(dir string) (string, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil {
			for line := range strings.Lines(string(b)) {
				if f := strings.Fields(line); len(f) == 2 && f[0] == "module" && strings.Trim(f[1], `"`) == "microlab" {
					return dir, nil
				}
			}
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("not inside the microlab repository")
		}
		dir = parent
	}
}

// Answering reports whether a Jaeger already serves these ports: its query API answers
// and its OTLP receiver accepts connections (lab up then uses it rather than failing on
// taken ports).
func (j Jaeger) Answering(ctx context.Context) bool {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, j.QueryURL()+"/api/services", nil)
	if err != nil {
		return false
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false
	}
	var body struct {
		Data []string `json:"data"`
	}
	err = json.NewDecoder(resp.Body).Decode(&body)
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK || err != nil {
		return false
	}
	c, err := (&net.Dialer{}).DialContext(ctx, "tcp", j.addr(j.OTLPHTTPPort))
	if err != nil {
		return false
	}
	_ = c.Close()
	return true
}
