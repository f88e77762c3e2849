package stack

import (
	"bufio"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"

	"microlab/lab/supervisor"
	"microlab/services/platform/testenv"
)

// The observability ports, shifted like the services', never meet a service instance's
// port at the same offset, however far every service is scaled.
func TestObservabilityPortsAvoidServicePorts(t *testing.T) {
	t.Parallel()
	scale := map[string]int{}
	for _, s := range Services {
		if s.Name != Dashboard { // runs once
			scale[s.Name] = MaxScale
		}
	}
	scale[CatalogV2] = 1 // catalog-v2-1 too
	cfg := Config{Host: "127.0.0.1", PortOffset: 1234}
	insts, err := cfg.Instances(scale)
	if err != nil {
		t.Fatal(err)
	}
	used := map[string]string{}
	for _, in := range insts {
		for _, addr := range []string{in.Addr, in.GRPCAddr} {
			if id, ok := used[addr]; ok && addr != "" {
				t.Errorf("%s listens on %s, where %s does", in.ID, addr, id)
			}
			if addr != "" {
				used[addr] = in.ID
			}
		}
	}
	j, p := cfg.Jaeger("", ""), cfg.Prometheus("", "")
	for name, addr := range map[string]string{
		"jaeger otlp":  j.addr(j.OTLPHTTPPort),
		"jaeger query": j.addr(j.QueryPort),
		"jaeger grpc":  j.addr(j.QueryGRPCPort),
		"prometheus":   strings.TrimPrefix(p.URL(), "http://"),
	} {
		if id, ok := used[addr]; ok {
			t.Errorf("%s on %s, where %s listens", name, addr, id)
		}
		used[addr] = name
	}
	if got, want := cfg.OTLPEndpoint(), "http://127.0.0.1:5552"; got != want {
		t.Errorf("OTLPEndpoint %q, want %q", got, want)
	}
	if cfg.JaegerURL() != j.QueryURL() || cfg.PrometheusURL() != p.URL() || j.OTLPEndpoint() != cfg.OTLPEndpoint() {
		t.Errorf("Config's URLs (%s, %s, %s) differ from the processes' (%s, %s, %s)",
			cfg.JaegerURL(), cfg.PrometheusURL(), cfg.OTLPEndpoint(), j.QueryURL(), p.URL(), j.OTLPEndpoint())
	}
}

func TestTargets(t *testing.T) {
	t.Parallel()
	cfg := Config{Host: "127.0.0.1", PortOffset: 10}
	groups, err := cfg.Targets(map[string]int{"payments": 2})
	if err != nil {
		t.Fatal(err)
	}
	if len(groups) != len(Services)+2 {
		t.Errorf("%d target groups, want one per instance and RabbitMQ's", len(groups))
	}
	want := map[string]string{"127.0.0.1:8114": "payments", "127.0.0.1:9114": "payments", "127.0.0.1:8010": "gateway", RabbitMQMetricsAddr: "rabbitmq"}
	for _, g := range groups {
		if len(g.Targets) != 1 {
			t.Fatalf("group %v", g)
		}
		if job, ok := want[g.Targets[0]]; ok {
			if g.Labels["job"] != job {
				t.Errorf("%s: job %q, want %q", g.Targets[0], g.Labels["job"], job)
			}
			delete(want, g.Targets[0])
		}
		if (g.Labels["job"] == "rabbitmq") != (g.Labels["__metrics_path__"] == "/metrics/per-object") {
			t.Errorf("metrics path of %v", g)
		}
	}
	if len(want) > 0 {
		t.Errorf("no targets %v", want)
	}
}

func TestRequiredVersions(t *testing.T) {
	t.Parallel()
	gomod := filepath.Join(t.TempDir(), "go.mod")
	err := os.WriteFile(gomod, []byte("module x\n\ngo 1.26\n\ntool example.com/a/cmd/a\n\nrequire example.com/a v1.2.3\n\nrequire (\n\texample.com/b v0.1.0 // indirect\n\tgolang.org/x/c v0.0.0-2025 // indirect\n)\n"), 0o644)
	if err != nil {
		t.Fatal(err)
	}
	got, err := requiredVersions(gomod)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"example.com/a": "v1.2.3", "example.com/b": "v0.1.0", "golang.org/x/c": "v0.0.0-2025"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("requiredVersions = %v, want %v", got, want)
	}
}

// JaegerStale reads what a binary was built from: a missing binary, something else than
// Jaeger and (when one is built) the real binary against tools/go.mod and against a
// go.mod pinning another version.
func TestJaegerStale(t *testing.T) {
	t.Parallel()
	root := moduleRoot()
	if why, err := JaegerStale(root, t.TempDir()); err != nil || why != "not built yet" {
		t.Errorf("empty bin dir: %q, %v", why, err)
	}
	other := t.TempDir()
	exe, _ := os.Executable() // a Go binary, not Jaeger
	if err := os.Symlink(exe, filepath.Join(other, "jaeger")); err != nil {
		t.Fatal(err)
	}
	if why, err := JaegerStale(root, other); err != nil || !strings.Contains(why, "not a Jaeger build") {
		t.Errorf("test binary as jaeger: %q, %v", why, err)
	}
	bin, err := JaegerBinary()
	if err != nil {
		t.Skipf("the rest needs a built Jaeger: %v", err)
	}
	binDir := filepath.Dir(bin)
	if why, err := JaegerStale(root, binDir); err != nil || why != "" {
		t.Errorf("%s against tools/go.mod: %q, %v (is it stale? %s)", bin, why, err, JaegerBuildCommand(root, binDir))
	} else {
		var out strings.Builder
		if err := BuildJaeger(t.Context(), root, binDir, &out); err != nil || out.Len() > 0 {
			t.Errorf("BuildJaeger of an up-to-date binary: %v, %q", err, out.String())
		}
	}
	fake := t.TempDir()
	if err := os.MkdirAll(filepath.Join(fake, "tools"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(fake, "tools", "go.mod"), []byte("module microlab/tools\n\nrequire github.com/jaegertracing/jaeger v9.9.9\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if why, err := JaegerStale(fake, binDir); err != nil || !strings.Contains(why, "requires v9.9.9") {
		t.Errorf("against a go.mod pinning v9.9.9: %q, %v", why, err)
	}
}

// observabilityLab is a supervisor and a Config at a free offset, for one test.
func observabilityLab(t *testing.T) (Config, *supervisor.Supervisor) {
	t.Helper()
	offset, err := ClaimOffset(nil, testenv.ClaimPorts(t))
	if err != nil {
		t.Fatal(err)
	}
	sup := supervisor.New(slog.New(slog.NewTextHandler(io.Discard, nil)), io.Discard)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), patience)
		defer cancel()
		if err := sup.StopAll(ctx); err != nil {
			t.Error(err)
		}
	})
	return Config{Host: "127.0.0.1", PortOffset: offset}, sup
}

// A real Jaeger on the test's own ports: one span in over OTLP/HTTP (the SDK exporter
// the services use), the same span out of the query API; and it listens on exactly the
// three ports chosen, on 127.0.0.1.
func TestJaegerStoresASpan(t *testing.T) {
	t.Parallel()
	bin, err := JaegerBinary()
	if err != nil {
		testenv.Missing(t, "Jaeger", JaegerFix(), err)
	}
	cfg, sup := observabilityLab(t)
	j := cfg.Jaeger(bin, t.TempDir())
	ctx, cancel := context.WithTimeout(t.Context(), patience)
	defer cancel()
	start := time.Now()
	if err := j.Start(ctx, sup); err != nil {
		t.Fatal(err)
	}
	t.Logf("jaeger ready in %s", time.Since(start).Round(time.Millisecond))
	if !filepath.IsAbs(j.Dir) {
		t.Errorf("Dir %q not made absolute", j.Dir)
	}

	exp, err := otlptracehttp.New(ctx, otlptracehttp.WithEndpointURL(cfg.OTLPEndpoint()+"/v1/traces"))
	if err != nil {
		t.Fatal(err)
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp),
		sdktrace.WithResource(resource.NewSchemaless(semconv.ServiceName("stack-test"))))
	_, span := tp.Tracer("stack-test").Start(ctx, "hello jaeger")
	traceID := span.SpanContext().TraceID()
	span.End()
	if err := tp.Shutdown(ctx); err != nil {
		t.Fatalf("export: %v", err)
	}

	var got struct {
		Data []struct {
			TraceID string `json:"traceID"`
			Spans   []struct {
				OperationName string `json:"operationName"`
				ProcessID     string `json:"processID"`
			} `json:"spans"`
			Processes map[string]struct {
				ServiceName string `json:"serviceName"`
			} `json:"processes"`
		} `json:"data"`
	}
	id := hex.EncodeToString(traceID[:])
	for got.Data == nil {
		if ctx.Err() != nil {
			t.Fatalf("trace %s not in Jaeger; log:\n%s", id, readFile(j.LogFile()))
		}
		time.Sleep(100 * time.Millisecond)
		resp, err := http.Get(j.QueryURL() + "/api/traces/" + id)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode == http.StatusOK {
			if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
				t.Fatal(err)
			}
		}
		_ = resp.Body.Close()
	}
	if len(got.Data) != 1 || got.Data[0].TraceID != id || len(got.Data[0].Spans) != 1 {
		t.Fatalf("trace %s: %+v", id, got)
	}
	s := got.Data[0].Spans[0]
	if s.OperationName != "hello jaeger" || got.Data[0].Processes[s.ProcessID].ServiceName != "stack-test" {
		t.Errorf("span %+v of %+v", s, got.Data[0].Processes)
	}

	want := []string{j.addr(j.OTLPHTTPPort), j.addr(j.QueryPort), j.addr(j.QueryGRPCPort)}
	if got := listening(t, sup.PID("jaeger")); !sameSet(got, want) {
		t.Errorf("jaeger listens on %v, want exactly %v", got, want)
	}
	// Jaeger's output reaches its log file through the supervisor's copying goroutine,
	// which may trail it: wait for the line while Jaeger runs.
	for !strings.Contains(readFile(j.LogFile()), "Everything is ready") {
		if ctx.Err() != nil {
			t.Fatalf("%s lacks Jaeger's output:\n%s", j.LogFile(), readFile(j.LogFile()))
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := sup.Stop("jaeger"); err != nil {
		t.Error(err)
	}
}

// Jaeger's store is bounded (MaxTraces, oldest first) and its process runs under a soft
// memory limit: with room for two traces, the first two of four are gone once the last
// is stored, and the last two are there.
func TestJaegerKeepsOnlyMaxTraces(t *testing.T) {
	t.Parallel()
	bin, err := JaegerBinary()
	if err != nil {
		testenv.Missing(t, "Jaeger", JaegerFix(), err)
	}
	if !strings.Contains(Jaeger{}.Config(), fmt.Sprintf("max_traces: %d\n", DefaultJaegerMaxTraces)) {
		t.Errorf("default config does not bound the store at %d traces:\n%s", DefaultJaegerMaxTraces, Jaeger{}.Config())
	}
	cfg, sup := observabilityLab(t)
	j := cfg.Jaeger(bin, t.TempDir())
	j.MaxTraces = 2
	ctx, cancel := context.WithTimeout(t.Context(), patience)
	defer cancel()
	if err := j.Start(ctx, sup); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sup.Stop("jaeger") }()
	env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", sup.PID("jaeger")))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(strings.Split(string(env), "\x00"), "GOMEMLIMIT="+jaegerMemLimit) {
		t.Errorf("jaeger runs without GOMEMLIMIT=%s", jaegerMemLimit)
	}

	exp, err := otlptracehttp.New(ctx, otlptracehttp.WithEndpointURL(cfg.OTLPEndpoint()+"/v1/traces"))
	if err != nil {
		t.Fatal(err)
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp),
		sdktrace.WithResource(resource.NewSchemaless(semconv.ServiceName("stack-test"))))
	defer func() { _ = tp.Shutdown(context.Background()) }()
	status := func(id string) int {
		resp, err := http.Get(j.QueryURL() + "/api/traces/" + id)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		return resp.StatusCode
	}
	var ids []string
	for i := range 4 {
		_, span := tp.Tracer("stack-test").Start(ctx, fmt.Sprintf("trace %d", i))
		tid := span.SpanContext().TraceID()
		span.End() // exported synchronously: one OTLP request per trace, in order
		ids = append(ids, hex.EncodeToString(tid[:]))
		// Stored before the next is sent, so "oldest" is unambiguous.
		for status(ids[i]) != http.StatusOK {
			if ctx.Err() != nil {
				t.Fatalf("trace %d (%s) never stored; log:\n%s", i, ids[i], readFile(j.LogFile()))
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	for i, id := range ids {
		want := http.StatusOK
		if i < 2 {
			want = http.StatusNotFound
		}
		if got := status(id); got != want {
			t.Errorf("trace %d of 4 with max_traces 2: GET /api/traces → %d, want %d", i, got, want)
		}
	}
}

// A real Prometheus with the committed config and rules, scraping a tiny server of the
// test's through the targets file; a second WriteTargets is picked up while it runs.
func TestPrometheusScrapesTheTargets(t *testing.T) {
	t.Parallel()
	bin, err := FindPrometheus()
	if err != nil {
		testenv.Missing(t, "Prometheus", FixPrometheus, err)
	}
	cfg, sup := observabilityLab(t)
	metrics := func(value int) string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != "/metrics" {
				http.NotFound(w, r)
				return
			}
			fmt.Fprintf(w, "# TYPE lab_probe_value gauge\nlab_probe_value %d\n", value)
		})}
		go func() { _ = srv.Serve(ln) }()
		t.Cleanup(func() { _ = srv.Close() })
		return ln.Addr().String()
	}
	first, second := metrics(42), metrics(7)

	p := cfg.Prometheus(bin, t.TempDir())
	if err := p.WriteTargets([]TargetGroup{{Targets: []string{first}, Labels: map[string]string{"job": "probe"}}}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), patience)
	defer cancel()
	start := time.Now()
	if err := p.Start(ctx, sup); err != nil {
		t.Fatal(err)
	}
	t.Logf("prometheus ready in %s", time.Since(start).Round(time.Millisecond))

	query := func(q string) []string { // the values of the result vector
		t.Helper()
		resp, err := http.Get(p.URL() + "/api/v1/query?query=" + url.QueryEscape(q))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var r struct {
			Data struct {
				Result []struct {
					Value [2]any `json:"value"`
				} `json:"result"`
			} `json:"data"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, v := range r.Data.Result {
			out = append(out, fmt.Sprint(v.Value[1]))
		}
		return out
	}
	await := func(q string, want ...string) {
		t.Helper()
		for {
			got := query(q)
			if slices.Equal(got, want) {
				return
			}
			select {
			case <-ctx.Done():
				t.Fatalf("%s = %v, want %v; log:\n%s", q, got, want, readFile(p.LogFile()))
			case <-time.After(250 * time.Millisecond):
			}
		}
	}
	await(`up{job="probe"}`, "1")
	await(`lab_probe_value{job="probe",instance="`+first+`"}`, "42")

	if err := p.WriteTargets([]TargetGroup{
		{Targets: []string{first}, Labels: map[string]string{"job": "probe"}},
		{Targets: []string{second}, Labels: map[string]string{"job": "probe2"}},
	}); err != nil {
		t.Fatal(err)
	}
	await(`lab_probe_value{job="probe2"}`, "7")

	resp, err := http.Get(p.URL() + "/api/v1/rules")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if !strings.Contains(string(body), `"groups":[{`) {
		t.Errorf("no rule groups loaded: %.300s", body)
	}
	if got, want := listening(t, sup.PID("prometheus")), []string{net.JoinHostPort(p.Host, strconv.Itoa(p.Port))}; !sameSet(got, want) {
		t.Errorf("prometheus listens on %v, want exactly %v", got, want)
	}
}

// listening lists the TCP addresses process pid listens on, from /proc.
func listening(t *testing.T, pid int) []string {
	t.Helper()
	if pid == 0 {
		t.Fatal("process not running")
	}
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Skipf("no /proc: %v", err)
	}
	inodes := map[string]bool{}
	for _, fd := range fds {
		link, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name()))
		if ino, ok := strings.CutPrefix(link, "socket:["); ok {
			inodes[strings.TrimSuffix(ino, "]")] = true
		} else if err != nil {
			continue
		}
	}
	var out []string
	for _, file := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		f, err := os.Open(file)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			// sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
			fields := strings.Fields(sc.Text())
			if len(fields) < 10 || fields[3] != "0A" || !inodes[fields[9]] { // 0A: LISTEN
				continue
			}
			out = append(out, procAddr(fields[1]))
		}
		_ = f.Close()
	}
	return out
}

// procAddr decodes /proc/net/tcp's "0100007F:1F90" (little-endian IPv4 words) to
// "127.0.0.1:8080".
func procAddr(s string) string {
	h, p, _ := strings.Cut(s, ":")
	port, _ := strconv.ParseUint(p, 16, 16)
	b, _ := hex.DecodeString(h)
	for i := 0; i+4 <= len(b); i += 4 { // each 32-bit word is in host (little-endian) order
		b[i], b[i+1], b[i+2], b[i+3] = b[i+3], b[i+2], b[i+1], b[i]
	}
	ip := net.IP(b)
	return net.JoinHostPort(ip.String(), strconv.Itoa(int(port)))
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

func readFile(name string) string {
	b, err := os.ReadFile(name)
	if err != nil {
		return err.Error()
	}
	return string(b)
}
