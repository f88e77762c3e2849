package e2e

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"microlab/lab/reconcile"
	"microlab/lab/scaling"
	"microlab/lab/stack"
	"microlab/lab/supervisor"
	"microlab/services/platform/bus"
	"microlab/services/platform/control"
	"microlab/services/platform/pg"
	"microlab/services/platform/testenv"
)

// binaries are built once per test binary run, into a directory shared by every test.
var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

func TestMain(m *testing.M) {
	code := m.Run()
	if labCLI != "" {
		_ = os.RemoveAll(filepath.Dir(labCLI)) // the lab CLI's own directory (labBinary)
	}
	for _, dir := range []string{binDir, plainDir} {
		if dir != "" {
			_ = os.RemoveAll(dir)
		}
	}
	os.Exit(code)
}

func binaries(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "microlab-e2e-bin-")
		if buildErr != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		buildErr = stack.Build(ctx, repoRoot(), binDir, io.Discard, "-race")
	})
	if buildErr != nil {
		t.Fatalf("build services: %v", buildErr)
	}
	return binDir
}

// lab is one running shop for one test.
type lab struct {
	t      testing.TB
	jaeger string // Jaeger's query API when started with tracing
	cfg    stack.Config
	sup    *supervisor.Supervisor
	api    *client
	store  *control.Store
	logs   *syncBuffer
	scale  map[string]int
	// scaler runs lab up's scale follower (labOptions.scaleUpTo), prom the Prometheus
	// whose targets it rewrites (startPrometheus).
	scaler *scaling.Scaler
	prom   atomic.Pointer[stack.Prometheus]
	mgmt   string // the RabbitMQ management API of the lab's vhost ("" on a private broker)
	// queues lists the queues of a private broker (which has no management API).
	queues func(context.Context) (map[string]int, error)
}

type labOptions struct {
	settings map[string]string // applied before the services start
	amqpURL  string            // "" = a fresh vhost on the machine's broker
	// queues lists amqpURL's queues with their depths, for a private broker (which has no
	// management API): testenv.Broker.Queues. A fresh vhost's are read from the machine's
	// management API.
	queues   func(context.Context) (map[string]int, error)
	adminDB  string         // "" = the machine's PostgreSQL (testenv.AdminDatabaseURL)
	scale    map[string]int // instances per service (`lab up --scale`); nil = one each
	tracing  bool           // start a Jaeger of the lab's own, receiving its spans
	env      []string       // extra environment for every service (wins over the test defaults)
	sampling string         // TRACES_SAMPLER_RATIO; "" = "1" with tracing, else "0"
	heavy    bool           // the test loads the lab to its limit: it runs alone (testenv.HoldLab)
	bins     string         // directory of service binaries ("" = the -race builds)
	// scaleUpTo > 0 runs lab up's scale follower (lab/scaling: scale.<service> settings
	// start and stop instances) and claims ports for that many instances of each.
	scaleUpTo int
}

// testDefaults lowers what costs CPU in every lab but is the subject of no test here:
// bcrypt's work factor (at cost 10 one login under -race takes most of a second of CPU,
// and a busy machine pushed registrations past the gateway's upstream timeout), and
// tracing where no test reads the traces. Tests about either say so in labOptions.
func testDefaults(opts labOptions) []string {
	sampling := opts.sampling
	if sampling == "" {
		sampling = map[bool]string{true: "1", false: "0"}[opts.tracing]
	}
	return []string{"BCRYPT_COST=4", "TRACES_SAMPLER_RATIO=" + sampling}
}

// startLab provisions databases, starts every service as a process and waits until all
// are healthy. Everything is torn down when the test ends.
func startLab(t testing.TB, opts labOptions) *lab {
	t.Helper()
	bins := opts.bins
	if bins == "" {
		bins = binaries(t)
	}
	amqpURL, mgmtURL := opts.amqpURL, ""
	if amqpURL == "" {
		amqpURL, mgmtURL = testenv.VHost(t), testenv.ManagementURL()
	}
	// The machine's lab budget, then one lab starting at a time: the ports it picks are
	// bound before the next lab looks for free ones.
	testenv.HoldLab(t, map[bool]int{false: testenv.Light, true: testenv.Heavy}[opts.heavy])
	started := testenv.StartLock(t)
	offset, err := stack.ClaimOffset(claimScale(opts), testenv.ClaimPorts(t))
	if err != nil {
		t.Fatal(err)
	}
	adminDB := opts.adminDB
	if adminDB == "" {
		adminDB = testenv.AdminDatabaseURL()
	}
	cfg := stack.Config{
		AdminDatabaseURL: adminDB,
		AMQPURL:          amqpURL,
		DBPrefix:         testenv.Name("e") + "_",
		PortOffset:       offset,
		Host:             "127.0.0.1",
		Extra:            append(testDefaults(opts), opts.env...),
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := stack.Provision(ctx, cfg); err != nil {
		t.Fatalf("provision: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		for _, s := range stack.Services {
			if s.DB {
				_ = pg.Drop(ctx, cfg.AdminDatabaseURL, cfg.DBName(s.Name))
			}
		}
		_ = pg.Drop(ctx, cfg.AdminDatabaseURL, cfg.DBName(stack.LabDB))
	})
	labURL, err := cfg.DatabaseURL(cfg.DBName(stack.LabDB))
	if err != nil {
		t.Fatal(err)
	}
	store, err := control.OpenStore(ctx, labURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(store.Close)
	for k, v := range opts.settings {
		if _, err := store.Set(ctx, k, v, "e2e"); err != nil {
			t.Fatal(err)
		}
	}
	logs := &syncBuffer{}
	l := &lab{t: t, cfg: cfg, store: store, logs: logs, scale: opts.scale, mgmt: mgmtURL, queues: opts.queues}
	if opts.tracing {
		// Registered before the services' cleanup, so it stops after them and receives
		// their last spans.
		bin, err := stack.JaegerBinary()
		if err != nil {
			testenv.Missing(t, "Jaeger", stack.JaegerFix(), err)
		}
		j := cfg.Jaeger(bin, t.TempDir())
		l.jaeger = j.QueryURL()
		startTool(t, ctx, "jaeger", j.Start)
	}
	sup := supervisor.New(slog.New(slog.NewTextHandler(io.Discard, nil)), logs)
	l.sup = sup
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		sup.StopAll(ctx)
		// The services are built with -race: a race in any of them fails the test even
		// if the supervisor's restart hid its crash.
		if strings.Contains(logs.Tail(1<<30), "WARNING: DATA RACE") {
			t.Error("a service reported a data race (see the logs below)")
		}
		if t.Failed() {
			t.Logf("service logs (tail):\n%s", logs.Tail(20000))
		}
	})
	if opts.scaleUpTo > 0 { // as lab up: the stored scale is launched, then followed
		if l.scale, err = scaling.Initial(ctx, store, opts.scale, "e2e"); err != nil {
			t.Fatal(err)
		}
	}
	if err := stack.Launch(ctx, cfg, sup, bins, l.scale); err != nil {
		t.Fatalf("launch: %v\nlogs:\n%s", err, logs.Tail(20000))
	}
	if opts.scaleUpTo > 0 {
		l.followScale(t, bins)
	}
	started()
	gw, _ := stack.Find("gateway")
	l.api = &client{base: cfg.URL(gw), http: &http.Client{Timeout: 10 * time.Second}}
	return l
}

// startTool runs Jaeger or Prometheus on a supervisor of its own, stopped at cleanup.
func startTool(t testing.TB, ctx context.Context, name string, start func(context.Context, *supervisor.Supervisor) error) {
	t.Helper()
	out := &syncBuffer{}
	sup := supervisor.New(slog.New(slog.NewTextHandler(io.Discard, nil)), out)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		sup.StopAll(ctx)
	})
	if err := start(ctx, sup); err != nil {
		t.Fatalf("start %s: %v\n%s", name, err, out.Tail(5000))
	}
}

// startPrometheus runs a Prometheus of the lab's own, with the committed native config
// and rules, scraping every service of the lab and RabbitMQ's plugin. It returns its URL.
func startPrometheus(t testing.TB, l *lab) string {
	t.Helper()
	bin, err := stack.FindPrometheus()
	if err != nil {
		testenv.Missing(t, "Prometheus", stack.FixPrometheus, err)
	}
	p := l.cfg.Prometheus(bin, t.TempDir())
	groups, err := l.cfg.Targets(l.scale)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.WriteTargets(groups); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	startTool(t, ctx, "prometheus", p.Start)
	l.prom.Store(&p)
	return p.URL()
}

// waitFor polls cond until it holds, failing the test after within.
func waitFor(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for: %s", within, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// serviceURL is the internal base URL of a service of this lab.
func (l *lab) serviceURL(name string) string {
	s, ok := stack.Find(name)
	if !ok {
		l.t.Fatalf("no service %s", name)
	}
	return l.cfg.URL(s)
}

// set changes a setting the way `lab settings set` does: store, then announce; then it
// waits until every instance exports the new value (lab_setting_info), so what the test
// does next happens under it.
func (l *lab) set(key, value string) {
	l.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ch, err := l.store.Set(ctx, key, value, "e2e")
	if err != nil {
		l.t.Fatal(err)
	}
	conn, err := bus.Dial(ctx, l.cfg.AMQPURL, "e2e-control", slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		l.t.Fatal(err)
	}
	defer conn.Close()
	if err := control.Announce(ctx, bus.NewPublisher(conn, slog.New(slog.NewTextHandler(io.Discard, nil))), ch); err != nil {
		l.t.Fatal(err)
	}
	l.awaitSetting(key, value)
}

// setting reads a setting's value from the lab's store.
func (l *lab) setting(key string) string {
	l.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := l.store.Load(ctx)
	if err != nil {
		l.t.Fatal(err)
	}
	return s.Get(key)
}

// awaitSetting waits until every instance that exports lab settings reports key=value.
// Every instance applies an announced change at once (the gateway through a
// connection for lab.control alone); the deadline is generous for a loaded machine.
func (l *lab) awaitSetting(key, value string) {
	l.t.Helper()
	insts, err := l.cfg.Instances(l.scale)
	if err != nil {
		l.t.Fatal(err)
	}
	want := fmt.Sprintf(`lab_setting_info{key=%q,value=%q} 1`, key, value)
	deadline := time.Now().Add(time.Minute)
	for _, in := range insts {
		for {
			body, err := metricsOf(in.URL())
			if err == nil && (strings.Contains(body, want) || !strings.Contains(body, "lab_setting_info{")) {
				break
			}
			if time.Now().After(deadline) {
				l.t.Fatalf("%s never applied %s=%s (last scrape error: %v)", in.ID, key, value, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
}

// metric sums the samples of a metric on a service's /metrics whose labels contain
// every one of labels (`queue="payments.events"`); 0 when there are none.
func (l *lab) metric(t testing.TB, service, name string, labels ...string) float64 {
	t.Helper()
	body, err := metricsOf(l.serviceURL(service))
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, line := range strings.Split(body, "\n") {
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		ok := true
		for _, lb := range labels {
			ok = ok && strings.Contains(line, lb)
		}
		if !ok {
			continue
		}
		var v float64
		if _, err := fmt.Sscan(line[strings.LastIndex(line, " ")+1:], &v); err == nil {
			sum += v
		}
	}
	return sum
}

func metricsOf(base string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/metrics", nil)
	if err != nil {
		return "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("GET %s/metrics: %s", base, resp.Status)
	}
	return string(b), err
}

func (l *lab) payments(ctx context.Context, orderID string) (payments, error) {
	var p payments
	err := getJSON(ctx, l.serviceURL("payments")+"/payments/"+orderID, &p)
	return p, err
}

func (l *lab) reservations(ctx context.Context, orderID string) (reservations, error) {
	var r reservations
	err := getJSON(ctx, l.serviceURL("inventory")+"/reservations/"+orderID, &r)
	return r, err
}

func (l *lab) stock(ctx context.Context, sku string) int {
	l.t.Helper()
	var s struct {
		OnHand int `json:"onHand"`
	}
	if err := getJSON(ctx, l.serviceURL("inventory")+"/stock/"+sku, &s); err != nil {
		l.t.Fatal(err)
	}
	return s.OnHand
}

// checkLedgers verifies that what payments and inventory recorded agrees with the order's
// outcome. Compensations may finish a moment after the order is cancelled (in
// choreography the refund, not the release, cancels the order), so it polls briefly.
func (l *lab) checkLedgers(ctx context.Context, o order) error {
	var last error
	for {
		last = l.ledgersAgree(ctx, o)
		if last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return last
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// ledgersAgree holds what payments and inventory report about an order (their own
// APIs) to the saga's rules, the very ones lab chaos reconciles every order with
// (reconcile.Check).
func (l *lab) ledgersAgree(ctx context.Context, o order) error {
	p, err := l.payments(ctx, o.OrderID)
	if err != nil {
		return err
	}
	r, err := l.reservations(ctx, o.OrderID)
	if err != nil {
		return err
	}
	ro := reconcile.Order{ID: o.OrderID, Accepted: true, InOrders: true, Status: o.Status, Reason: o.CancelReason,
		Total: o.TotalCents, Lines: map[string]int{}, Stock: map[string]reconcile.Reservation{},
		Payment: reconcile.Payment{Authorizations: p.Authorizations, Captures: p.Captures, Refunds: p.Refunds,
			Declines: p.Declines, AuthorizedCents: p.AuthorizedCents, CapturedCents: p.CapturedCents, RefundedCents: p.RefundedCents}}
	for _, it := range o.Items {
		ro.Lines[it.SKU]++
	}
	for _, ln := range r.Lines {
		st := ro.Stock[ln.SKU]
		switch ln.Status {
		case "reserved":
			st.Reserved++
		case "released":
			st.Released++
		}
		ro.Stock[ln.SKU] = st
	}
	if err := reconcile.Error(reconcile.Check(ro)); err != nil {
		return fmt.Errorf("order %s %s/%s: %w (payments %+v, reservations %+v)", o.OrderID, o.Status, o.CancelReason, err, p, r)
	}
	return nil
}

// syncBuffer collects the services' logs for failure reports.
type syncBuffer struct {
	mu  sync.Mutex
	buf strings.Builder
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.buf.Len() > 8<<20 { // keep memory bounded under long tests
		s := b.buf.String()
		b.buf.Reset()
		b.buf.WriteString(s[len(s)/2:])
	}
	return b.buf.Write(p)
}

func (b *syncBuffer) Tail(n int) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.buf.String()
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}
