package bench

import (
	"context"
	crand "crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"microlab/lab/stack"
	"microlab/lab/supervisor"
	"microlab/lab/topology"
	"microlab/services/platform/bus"
	"microlab/services/platform/control"
	"microlab/services/platform/pg"
)

// labRun is the lab being measured: one of bench's own (its own databases, vhost and
// ports, started and stopped here), or with --use-running the one already running.
type labRun struct {
	cfg   stack.Config
	own   bool
	bins  string                 // the services' binaries (own lab)
	sup   *supervisor.Supervisor // the services (own lab)
	obs   *supervisor.Supervisor // Jaeger and Prometheus (own lab)
	logs  *tailBuffer
	vhost string

	jaegerURL string // "" without a Jaeger
	prom      bool   // a Prometheus of the lab's own runs

	store *control.Store
	conn  *bus.Conn
	pub   *bus.Publisher
	quiet *slog.Logger

	launches    []time.Duration
	baseEnv     []string // every service's extra environment, sampling aside
	sampling    string   // TRACES_SAMPLER_RATIO the services run with now
	cleanupDirs []string
	restoreMode string // --use-running: the saga.mode to put back at the end
}

// labDBs are the databases whose activity counts as the lab's.
func (l *labRun) labDBs() []string {
	dbs := l.cfg.Databases()
	if l.cfg.Shared() {
		dbs = append(dbs, l.cfg.DBName(stack.SharedDB))
	}
	return dbs
}

// openControl opens the settings store and a broker connection to announce changes.
func (l *labRun) openControl(ctx context.Context) error {
	labURL, err := l.cfg.DatabaseURL(l.cfg.DBName(stack.LabDB))
	if err != nil {
		return err
	}
	if l.store, err = control.OpenStore(ctx, labURL); err != nil {
		return fmt.Errorf("the lab's settings: %w", err)
	}
	if l.conn, err = bus.Dial(ctx, l.cfg.AMQPURL, "lab-bench", l.quiet); err != nil {
		return fmt.Errorf("RabbitMQ: %w", err)
	}
	l.pub = bus.NewPublisher(l.conn, l.quiet)
	return nil
}

func (l *labRun) closeControl() {
	if l.conn != nil {
		_ = l.conn.Close()
	}
	if l.store != nil {
		l.store.Close()
	}
}

// setting changes a setting through the control plane (stored, announced) and waits
// until every instance exports the new value, so that what follows runs under it.
func (l *labRun) setting(ctx context.Context, key, value string) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	ch, err := l.store.Set(ctx, key, value, "lab bench")
	if err != nil {
		return err
	}
	if err := control.Announce(ctx, l.pub, ch); err != nil {
		return fmt.Errorf("announce %s=%s: %w", key, value, err)
	}
	insts, err := l.cfg.Instances(nil)
	if err != nil {
		return err
	}
	want := fmt.Sprintf(`lab_setting_info{key=%q,value=%q} 1`, key, value)
	for _, in := range insts {
		for {
			body, err := get(ctx, in.URL()+"/metrics")
			if err == nil && (strings.Contains(body, want) || !strings.Contains(body, "lab_setting_info{")) {
				break
			}
			if ctx.Err() != nil {
				return fmt.Errorf("%s never applied %s=%s", in.ID, key, value)
			}
			_ = sleep(ctx, 100*time.Millisecond)
		}
	}
	return nil
}

// current reads a setting's value.
func (l *labRun) current(ctx context.Context, key string) (string, error) {
	s, err := l.store.Load(ctx)
	if err != nil {
		return "", err
	}
	return s.Get(key), nil
}

func get(ctx context.Context, url string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
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
		err = fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return string(b), err
}

// launch starts every service with the given sampling ratio and times stack.Launch to
// all-healthy: `lab up`'s start with built binaries.
func (l *labRun) launch(ctx context.Context, sampling string) (time.Duration, error) {
	cfg := l.cfg
	cfg.Extra = append(append([]string{}, l.baseEnv...), "TRACES_SAMPLER_RATIO="+sampling)
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	start := time.Now()
	if err := stack.Launch(ctx, cfg, l.sup, l.bins, nil); err != nil {
		return 0, fmt.Errorf("%w\nthe services' last lines:\n%s", err, l.logs.tail(4000))
	}
	took := time.Since(start)
	l.launches = append(l.launches, took)
	l.sampling = sampling
	return took, nil
}

// stopServices stops every service (Jaeger and Prometheus stay).
func (l *labRun) stopServices(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	return l.sup.StopAll(ctx)
}

// members lists the processes to measure: every instance, Jaeger, Prometheus, the
// PostgreSQL and RabbitMQ processes and this process, the generator.
func (l *labRun) members() []member {
	var out []member
	insts, _ := l.cfg.Instances(nil)
	var byAddr map[string]int
	if !l.own {
		addrs := map[string]string{}
		for _, in := range insts {
			addrs[in.Addr] = in.ID
		}
		byAddr = findByAddr(addrs)
	}
	for _, in := range insts {
		pid := 0
		if l.own {
			pid = l.sup.PID(in.ID)
		} else {
			pid = byAddr[in.ID]
		}
		if pid == 0 {
			continue
		}
		kind := kindService
		if in.Service.Name == stack.Dashboard {
			kind = kindDashboard
		}
		out = append(out, member{pid: pid, group: in.Service.Name, kind: kind, lab: true})
	}
	for _, name := range []string{"jaeger", "prometheus"} {
		pid := 0
		if l.own {
			pid = l.obs.PID(name)
		} else {
			pid = findByComm(name)
		}
		if pid != 0 {
			out = append(out, member{pid: pid, group: name, kind: kindObs, lab: true})
		}
	}
	dbs := map[string]bool{}
	for _, db := range l.labDBs() {
		dbs[db] = true
	}
	out = append(out, infrastructure(dbs)...)
	return append(out, member{pid: os.Getpid(), group: groupGenerator, kind: kindGenerator})
}

// xacts reads xact_commit of the lab's databases (pg_stat_database, cumulative).
func (l *labRun) xacts(ctx context.Context) (map[string]int64, error) {
	conn, err := pgx.Connect(ctx, l.cfg.AdminDatabaseURL)
	if err != nil {
		return nil, fmt.Errorf("PostgreSQL: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	rows, err := conn.Query(ctx, `SELECT datname, xact_commit FROM pg_stat_database WHERE datname = ANY($1)`, l.labDBs())
	if err != nil {
		return nil, fmt.Errorf("pg_stat_database: %w", err)
	}
	out := map[string]int64{}
	for rows.Next() {
		var db string
		var n int64
		if err := rows.Scan(&db, &n); err != nil {
			return nil, err
		}
		out[strings.TrimPrefix(db, l.cfg.DBPrefix)] = n
	}
	return out, rows.Err()
}

// pending counts orders whose saga has not ended.
func (l *labRun) pending(ctx context.Context) (int64, error) {
	u, err := l.cfg.ServiceDatabaseURL("orders")
	if err != nil {
		return 0, err
	}
	conn, err := pgx.Connect(ctx, u)
	if err != nil {
		return 0, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var n int64
	err = conn.QueryRow(ctx, `SELECT count(*) FROM orders WHERE status = 'pending'`).Scan(&n)
	return n, err
}

// settle waits until no saga is under way (the orders database has no pending order),
// at most within, then a moment more for the compensations and the last publishes. It
// returns when the lab went quiet, and whether it did.
func (l *labRun) settle(ctx context.Context, within, extra time.Duration, progress func(string)) (time.Time, bool) {
	deadline := time.Now().Add(within)
	last := time.Time{}
	for {
		n, err := l.pending(ctx)
		if err == nil && n == 0 {
			break
		}
		if ctx.Err() != nil || time.Now().After(deadline) {
			return time.Now(), false
		}
		if time.Since(last) >= 5*time.Second {
			progress(fmt.Sprintf("waiting for %d sagas under way to end", n))
			last = time.Now()
		}
		_ = sleep(ctx, 250*time.Millisecond)
	}
	_ = sleep(ctx, extra)
	return time.Now(), true
}

// ownLab brings a lab of bench's own up: databases, vhost, Jaeger and Prometheus on a
// free port offset (under the machine's start lock, as tests do), the services from
// bins. The first launch is timed.
func ownLab(ctx context.Context, o *Options, m *mgmt, bins, jaegerBin string, progress func(string)) (*labRun, error) {
	tag := strings.ToLower(crand.Text()[:8])
	l := &labRun{own: true, bins: bins, logs: &tailBuffer{}, vhost: "microlab-bench-" + tag,
		quiet: slog.New(slog.DiscardHandler)}
	l.baseEnv = []string{
		// Many shoppers in one process, from one address: the gateway's per-client
		// limit would measure the limiter, not the shop.
		"RATE_LIMIT_RPS=0",
	}
	if len(o.Phases) == 0 || slices.Contains(o.Phases, PhaseProfile) {
		// The profile phase asks every Go process for a CPU profile (app.Base.Pprof).
		l.baseEnv = append(l.baseEnv, "PPROF=true")
	}
	l.baseEnv = append(l.baseEnv, o.Env...)
	if o.Quick {
		// Quick runs log shoppers in before every run: bcrypt at its lowest cost.
		l.baseEnv = append(l.baseEnv, "BCRYPT_COST=4")
	}
	if err := m.createVHost(ctx, l.vhost); err != nil {
		return nil, err
	}
	amqpURL, err := withVHost(o.Stack.AMQPURL, l.vhost)
	if err != nil {
		return l, err
	}
	offset, err := stack.FreeOffset(nil)
	if err != nil {
		return l, err
	}
	l.cfg = stack.Config{AdminDatabaseURL: o.Stack.AdminDatabaseURL, AMQPURL: amqpURL, DBPrefix: "mlbench_" + tag + "_",
		PortOffset: offset, Host: "127.0.0.1"}
	progress(fmt.Sprintf("a lab of its own: databases %s*, vhost %s, ports +%d", l.cfg.DBPrefix, l.vhost, offset))
	pctx, cancel := context.WithTimeout(ctx, time.Minute)
	err = stack.Provision(pctx, l.cfg)
	cancel()
	if err != nil {
		return l, fmt.Errorf("databases: %w", err)
	}
	if err := l.openControl(ctx); err != nil {
		return l, err
	}
	run, err := os.MkdirTemp("", "microlab-bench-run-")
	if err != nil {
		return l, err
	}
	l.cleanupDirs = append(l.cleanupDirs, run)
	l.obs = supervisor.New(l.quiet, io.Discard)
	l.sup = supervisor.New(l.quiet, l.logs)
	if jaegerBin != "" {
		j := l.cfg.Jaeger(jaegerBin, filepath.Join(run, "jaeger"))
		if err := j.Start(ctx, l.obs); err != nil {
			return l, err
		}
		l.jaegerURL = j.QueryURL()
	}
	if bin, err := stack.FindPrometheus(); err == nil {
		p := l.cfg.Prometheus(bin, filepath.Join(run, "prometheus"))
		targets, err := l.cfg.Targets(nil)
		if err == nil {
			err = p.WriteTargets(targets)
		}
		if err == nil {
			err = p.Start(ctx, l.obs)
		}
		if err != nil {
			return l, err
		}
		l.prom = true
	}
	return l, nil
}

// close stops everything bench started and removes its databases, vhost and files.
func (l *labRun) close(ctx context.Context, m *mgmt, progress func(string)) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer cancel()
	if !l.own {
		var err error
		if l.restoreMode != "" && l.store != nil {
			err = l.setting(ctx, "saga.mode", l.restoreMode)
		}
		l.closeControl()
		return err
	}
	l.closeControl()
	var errs []error
	t0 := time.Now()
	if l.sup != nil {
		errs = append(errs, l.sup.StopAll(ctx))
	}
	if l.obs != nil {
		errs = append(errs, l.obs.StopAll(ctx))
	}
	progress(fmt.Sprintf("stopped in %.1fs", time.Since(t0).Seconds()))
	t0 = time.Now()
	if l.cfg.DBPrefix != "" { // never the learner's databases: only bench's own prefix
		// Together: each DROP DATABASE waits for a checkpoint, and concurrent ones share it.
		var mu sync.Mutex
		var wg sync.WaitGroup
		for _, db := range l.cfg.Databases() {
			wg.Go(func() {
				if err := pg.Drop(ctx, l.cfg.AdminDatabaseURL, db); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
			})
		}
		wg.Wait()
	}
	if err := m.deleteVHost(ctx, l.vhost); err != nil {
		errs = append(errs, err)
	}
	for _, d := range l.cleanupDirs {
		_ = os.RemoveAll(d)
	}
	progress(fmt.Sprintf("databases, vhost and files removed in %.1fs", time.Since(t0).Seconds()))
	return errors.Join(errs...)
}

// runningLab is --use-running: the lab the CLI's environment describes, already up.
func runningLab(ctx context.Context, sc stack.Config, progress func(string)) (*labRun, error) {
	l := &labRun{cfg: sc, logs: &tailBuffer{}, quiet: slog.New(slog.DiscardHandler), sampling: "as the lab runs"}
	gw, _ := stack.Find("gateway")
	if _, err := get(ctx, sc.URL(gw)+"/healthz"); err != nil {
		return nil, fmt.Errorf("no lab answers at %s (start one with lab up, or run bench without --use-running): %w", sc.URL(gw), err)
	}
	var err error
	if l.cfg.Topology, err = topology.Where(ctx, sc); err != nil {
		return nil, err
	}
	if l.vhost, err = vhostOf(sc.AMQPURL); err != nil {
		return nil, err
	}
	l.jaegerURL = sc.JaegerURL()
	if _, err := get(ctx, l.jaegerURL+"/api/services"); err != nil {
		progress("no Jaeger answers at " + l.jaegerURL + ": spans per checkout are not measured")
		l.jaegerURL = ""
	}
	return l, l.openControl(ctx)
}

func withVHost(amqpURL, vhost string) (string, error) {
	u, err := url.Parse(amqpURL)
	if err != nil {
		return "", fmt.Errorf("AMQP_URL: %w", err)
	}
	u.Path, u.RawPath = "/"+vhost, "/"+url.PathEscape(vhost)
	return u.String(), nil
}

func vhostOf(amqpURL string) (string, error) {
	u, err := url.Parse(amqpURL)
	if err != nil {
		return "", fmt.Errorf("AMQP_URL: %w", err)
	}
	if v := strings.TrimPrefix(u.Path, "/"); v != "" {
		return v, nil
	}
	return "/", nil
}

// tailBuffer keeps the services' last output, for an error that needs it.
type tailBuffer struct {
	mu  sync.Mutex
	buf []byte
}

func (b *tailBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	if len(b.buf) > 1<<20 {
		b.buf = append([]byte(nil), b.buf[len(b.buf)-(1<<19):]...)
	}
	return len(p), nil
}

func (b *tailBuffer) tail(n int) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.buf) > n {
		return string(b.buf[len(b.buf)-n:])
	}
	return string(b.buf)
}
