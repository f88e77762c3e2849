package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"microlab/lab/reconcile"
	"microlab/lab/stack"
	"microlab/lab/supervisor"
	"microlab/lab/topology"
	"microlab/services/platform/control"
	"microlab/services/platform/pg"
	"microlab/services/platform/rabbitmgmt"
	"microlab/services/platform/testenv/private"
)

// ownLab is a lab `lab chaos` started for itself: every service a process under its own
// supervisor (which SIGKILLs them), on ports, databases (a prefix of its own) and a
// RabbitMQ vhost nobody else uses, or — for the broker and postgres faults — on a
// RabbitMQ node and a PostgreSQL cluster of its own, the only ones it ever restarts.
type ownLab struct {
	sc       stack.Config
	mgmt     string
	sup      *supervisor.Supervisor
	broker   *private.Broker   // nil: the machine's, in a vhost of the lab's own
	postgres *private.Postgres // nil: the machine's, databases of the lab's own
	undo     []func(context.Context) error
}

func (l *ownLab) stack() stack.Config { return l.sc }

func (l *ownLab) dlqs() reconcile.Options {
	if l.broker != nil {
		return reconcile.Options{ListQueues: func(ctx context.Context) (map[string]int, error) { return l.broker.Queues(ctx, "/") }}
	}
	return reconcile.Options{ManagementURL: l.mgmt}
}

func (l *ownLab) healthy(ctx context.Context) error { return l.sup.WaitHealthy(ctx) }

// close stops the services and removes what the lab made, last made first.
func (l *ownLab) close() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var errs []error
	for _, f := range slices.Backward(l.undo) {
		if err := f(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	l.undo = nil
	return errors.Join(errs...)
}

func has(steps []step, kind string) bool {
	return slices.ContainsFunc(steps, func(s step) bool { return s.kind == kind })
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// startChaosLab brings up a lab of chaos's own, ready for load.
func startChaosLab(ctx context.Context, cfg Config, o chaosOptions, out *lines) (_ *ownLab, err error) {
	id := randomHex(3)
	offset, err := stack.FreeOffset(nil)
	if err != nil {
		return nil, err
	}
	l := &ownLab{mgmt: cfg.ManagementURL, sc: stack.Config{
		AdminDatabaseURL: cfg.AdminDatabaseURL,
		AMQPURL:          cfg.AMQPURL,
		DBPrefix:         cfg.DBPrefix + "chaos" + id + "_",
		PortOffset:       offset,
		Host:             "127.0.0.1",
		// No Jaeger runs for this lab: its spans would be made only to be dropped.
		Extra: []string{"TRACES_SAMPLER_RATIO=0"},
	}}
	defer func() {
		if err != nil {
			err = errors.Join(err, l.close())
		}
	}()

	if has(o.steps, faultBroker) {
		out.printf("chaos: starting a RabbitMQ node of its own (its restarts disturb nobody else)")
		if l.broker, err = private.NewBroker(); err != nil {
			return nil, err
		}
		l.undo = append(l.undo, func(context.Context) error { return l.broker.Remove() })
		if err := l.broker.Start(ctx); err != nil {
			return nil, err
		}
		l.undo = append(l.undo, l.broker.Stop)
		l.sc.AMQPURL, l.mgmt = l.broker.URL(), ""
	} else {
		vhost := "chaos-" + id
		if err := createVHost(ctx, cfg.ManagementURL, cfg.AMQPURL, vhost); err != nil {
			return nil, err
		}
		if !o.keep {
			l.undo = append(l.undo, func(ctx context.Context) error {
				return mgmtDo(ctx, cfg.ManagementURL, http.MethodDelete, "/api/vhosts/"+url.PathEscape(vhost), "")
			})
		}
		if l.sc.AMQPURL, err = withVHost(cfg.AMQPURL, vhost); err != nil {
			return nil, err
		}
	}
	if has(o.steps, faultPostgres) {
		out.printf("chaos: starting a PostgreSQL cluster of its own (its restarts disturb nobody else)")
		if l.postgres, err = private.NewPostgres(ctx); err != nil {
			return nil, err
		}
		l.undo = append(l.undo, func(context.Context) error { return l.postgres.Remove() })
		if err := l.postgres.Start(ctx); err != nil {
			return nil, err
		}
		l.undo = append(l.undo, l.postgres.Stop)
		l.sc.AdminDatabaseURL = l.postgres.AdminURL()
	}
	pctx, cancel := context.WithTimeout(ctx, provisionTimeout)
	defer cancel()
	if l.postgres == nil && !o.keep {
		l.undo = append(l.undo, func(ctx context.Context) error {
			var errs []error
			for _, db := range l.sc.Databases() {
				errs = append(errs, pg.Drop(ctx, l.sc.AdminDatabaseURL, db))
			}
			return errors.Join(errs...)
		})
	}
	if err := stack.Provision(pctx, l.sc); err != nil {
		return nil, fmt.Errorf("databases: %w", err)
	}
	if o.mode != "" {
		if err := setMode(pctx, l.sc, o.mode); err != nil {
			return nil, err
		}
	}

	bin, err := cfg.Bin()
	if err != nil {
		return nil, err
	}
	if o.noBuild {
		for _, s := range stack.Services {
			if _, err := os.Stat(filepath.Join(bin, s.Name)); err != nil {
				return nil, fmt.Errorf("no binary for %s in %s (run lab chaos without --no-build): %w", s.Name, bin, err)
			}
		}
	} else {
		root, err := moduleRoot()
		if err != nil {
			return nil, err
		}
		bctx, cancel := context.WithTimeout(ctx, buildTimeout)
		err = stack.Build(bctx, root, bin, out)
		cancel()
		if err != nil {
			return nil, err
		}
	}

	run, err := cfg.Run()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(run, 0o755); err != nil {
		return nil, err
	}
	logPath := filepath.Join(run, "chaos.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	l.undo = append(l.undo, func(context.Context) error { return logFile.Close() })
	// The supervisor's decisions (killed, crashed, restarted) and the services' own
	// lines go to the log: the terminal is for the run's progress.
	l.sup = supervisor.New(slog.New(slog.NewTextHandler(logFile, nil)), logFile)
	l.undo = append(l.undo, func(ctx context.Context) error {
		if err := l.sup.StopAll(ctx); err != nil {
			out.printf("chaos: %v", err) // a service that had to be killed at the end is no failure of the run
		}
		return nil
	})
	out.printf("chaos: starting the lab (logs: %s)", logPath)
	lctx, cancel := context.WithTimeout(ctx, startTimeout)
	err = stack.Launch(lctx, l.sc, l.sup, bin, nil)
	cancel()
	if err != nil {
		return nil, err
	}
	vhost, _ := vhostName(l.sc.AMQPURL)
	gw, _ := stack.Find("gateway")
	out.printf("chaos: lab up: gateway %s, databases %s*, vhost %s of %s", l.sc.URL(gw), l.sc.DBPrefix, vhost, hostOf(l.sc.AMQPURL))
	if o.keep {
		out.printf("chaos: --keep: the databases %s* (and their roles) and vhost %s stay after the run", l.sc.DBPrefix, vhost)
	}
	return l, nil
}

// inject carries out s on the lab chaos started: SIGKILL through its supervisor, or a
// stop and start of its private broker or database.
func (l *ownLab) inject(ctx context.Context, s step, outage time.Duration) (string, error) {
	switch s.kind {
	case faultKill:
		old := l.sup.PID(s.service)
		if old == 0 {
			return "", fmt.Errorf("%s is not running (restarting after an earlier crash?)", s.service)
		}
		if err := l.sup.Kill(s.service); err != nil {
			return "", err
		}
		// Restarted (a new pid), then ready.
		for pid := l.sup.PID(s.service); pid == 0 || pid == old; pid = l.sup.PID(s.service) {
			select {
			case <-ctx.Done():
				return "", fmt.Errorf("%s was not restarted: %w", s.service, ctx.Err())
			case <-time.After(50 * time.Millisecond):
			}
		}
		if err := l.sup.WaitHealthy(ctx, s.service); err != nil {
			return "", err
		}
		return fmt.Sprintf("pid %d → %d", old, l.sup.PID(s.service)), nil
	case faultBroker:
		return restart(ctx, outage, l.broker.Stop, l.broker.Start, l.sup.WaitHealthy)
	default:
		return restart(ctx, outage, l.postgres.Stop, l.postgres.Start, l.sup.WaitHealthy)
	}
}

// restart stops, waits outage, starts, then waits for the lab to be healthy.
func restart(ctx context.Context, outage time.Duration, stop, start func(context.Context) error, healthy func(context.Context, ...string) error) (string, error) {
	t0 := time.Now()
	if err := stop(ctx); err != nil {
		return "", err
	}
	down := time.Now()
	select {
	case <-ctx.Done():
	case <-time.After(outage):
	}
	// Started again even when the run is over: a lab left without its broker or
	// database could not be reconciled.
	starting := time.Now()
	if err := start(context.WithoutCancel(ctx)); err != nil {
		return "", err
	}
	up := time.Now()
	if err := healthy(ctx); err != nil {
		return "", err
	}
	r := func(d time.Duration) time.Duration { return d.Round(100 * time.Millisecond) }
	return fmt.Sprintf("stopped in %s, down %s, started in %s, every service ready %s later",
		r(down.Sub(t0)), r(starting.Sub(down)), r(up.Sub(starting)), r(time.Since(up))), nil
}

// attachedLab is the lab `lab up` runs. Its broker and database are the machine's, so
// only kill faults apply, through the control plane's crash fault: the instance exits
// and lab up's supervisor restarts it.
type attachedLab struct {
	cfg   Config
	sc    stack.Config
	insts []stack.Instance // the instances that answered when chaos attached
	notes io.Writer
}

func (l *attachedLab) stack() stack.Config { return l.sc }
func (l *attachedLab) dlqs() reconcile.Options {
	return reconcile.Options{ManagementURL: l.cfg.ManagementURL}
}
func (l *attachedLab) close() error { return nil }

func attachLab(ctx context.Context, cfg Config, out *lines) (*attachedLab, error) {
	l := &attachedLab{cfg: cfg, sc: cfg.Stack(), notes: out}
	tctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var err error
	if l.sc.Topology, err = topology.Where(tctx, l.sc); err != nil {
		return nil, fmt.Errorf("the running lab's databases: %w", err)
	}
	client := &http.Client{Timeout: 2 * time.Second}
	for _, s := range stack.Services {
		n := stack.MaxScale // any scale lab up allows: probe every instance port
		if s.Name == stack.Dashboard {
			n = 1 // runs once
		}
		all, err := l.sc.Instances(map[string]int{s.Name: n})
		if err != nil {
			return nil, err
		}
		for _, in := range all {
			if in.Service.Name == s.Name && ready(tctx, client, in.URL()+"/healthz") {
				l.insts = append(l.insts, in)
			}
		}
	}
	if !slices.ContainsFunc(l.insts, func(in stack.Instance) bool { return in.Service.Name == "gateway" }) {
		gw, _ := stack.Find("gateway")
		return nil, fmt.Errorf("no lab answers at %s: start one with `lab up`, or run lab chaos without --attach", l.sc.URL(gw))
	}
	out.printf("chaos: attached to the running lab (%d instances); kill faults go through its control plane (crash)", len(l.insts))
	return l, nil
}

func (l *attachedLab) instances(service string) []stack.Instance {
	var out []stack.Instance
	for _, in := range l.insts {
		if service == "" || in.Service.Name == service {
			out = append(out, in)
		}
	}
	return out
}

// inject adds a crash fault on the service, then waits until one of its instances has
// restarted (a later process_start_time_seconds) and is ready.
func (l *attachedLab) inject(ctx context.Context, s step, _ time.Duration) (string, error) {
	insts := l.instances(s.service)
	if len(insts) == 0 {
		return "", fmt.Errorf("%s did not answer when lab chaos attached", s.service)
	}
	client := &http.Client{Timeout: 2 * time.Second}
	before := map[string]float64{}
	for _, in := range insts {
		if t, err := startTime(ctx, client, in.URL()); err == nil {
			before[in.ID] = t
		}
	}
	var id int64
	err := withPlane(ctx, l.cfg, l.notes, func(p *control.Plane) error {
		f, _, err := p.AddFault(ctx, control.FaultSpec{Service: s.service, Kind: control.FaultCrash, For: "2m"}, chaosSource)
		id = f.ID
		return err
	})
	if err != nil {
		return "", fmt.Errorf("crash fault on %s: %w", s.service, err)
	}
	for {
		for _, in := range insts {
			t, err := startTime(ctx, client, in.URL())
			if err == nil && t > before[in.ID] && ready(ctx, client, in.URL()+"/readyz") {
				return fmt.Sprintf("crash fault %d: %s restarted", id, in.ID), nil
			}
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("no instance of %s restarted after crash fault %d (is lab up's supervisor running?): %w", s.service, id, ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func (l *attachedLab) healthy(ctx context.Context) error {
	client := &http.Client{Timeout: 2 * time.Second}
	for _, in := range l.instances("") {
		for !ready(ctx, client, in.URL()+"/readyz") {
			select {
			case <-ctx.Done():
				return fmt.Errorf("%s not ready: %w", in.ID, ctx.Err())
			case <-time.After(200 * time.Millisecond):
			}
		}
	}
	return nil
}

// ready reports whether url answers 200.
func ready(ctx context.Context, client *http.Client, url string) bool {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return false
	}
	resp, err := client.Do(req)
	if err != nil {
		return false
	}
	_ = resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// startTime reads an instance's process_start_time_seconds from its /metrics.
func startTime(ctx context.Context, client *http.Client, base string) (float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/metrics", nil)
	if err != nil {
		return 0, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "process_start_time_seconds "); ok {
			return strconv.ParseFloat(strings.TrimSpace(v), 64)
		}
	}
	return 0, fmt.Errorf("%s/metrics: no process_start_time_seconds", base)
}

// setMode stores saga.mode in the lab's control database before its services start
// (they read it at start).
func setMode(ctx context.Context, sc stack.Config, mode string) error {
	u, err := sc.DatabaseURL(sc.DBName(stack.LabDB))
	if err != nil {
		return err
	}
	store, err := control.OpenStore(ctx, u)
	if err != nil {
		return err
	}
	defer store.Close()
	_, err = store.Set(ctx, control.SagaMode, mode, chaosSource)
	return err
}

// createVHost creates a vhost through the management API and lets the AMQP URL's user
// use it.
func createVHost(ctx context.Context, mgmtURL, amqpURL, vhost string) error {
	if err := mgmtDo(ctx, mgmtURL, http.MethodPut, "/api/vhosts/"+url.PathEscape(vhost), ""); err != nil {
		return fmt.Errorf("create vhost %s (lab chaos needs RabbitMQ's management API: rabbitmq-plugins enable rabbitmq_management): %w", vhost, err)
	}
	u, err := url.Parse(amqpURL)
	if err != nil {
		return fmt.Errorf("AMQP_URL: %w", err)
	}
	user := u.User.Username()
	if user == "" {
		user = "guest"
	}
	perm := `{"configure":".*","write":".*","read":".*"}`
	if err := mgmtDo(ctx, mgmtURL, http.MethodPut, "/api/permissions/"+url.PathEscape(vhost)+"/"+url.PathEscape(user), perm); err != nil {
		return fmt.Errorf("grant vhost %s to %s: %w", vhost, user, err)
	}
	return nil
}

// withVHost returns amqpURL naming vhost.
func withVHost(amqpURL, vhost string) (string, error) {
	u, err := url.Parse(amqpURL)
	if err != nil {
		return "", fmt.Errorf("AMQP_URL: %w", err)
	}
	u.Path = "/" + vhost
	u.RawPath = "/" + url.PathEscape(vhost)
	return u.String(), nil
}

func hostOf(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "?"
	}
	return u.Host
}

var mgmtClient = &http.Client{Timeout: 15 * time.Second}

// mgmtDo makes one request of RabbitMQ's management API.
func mgmtDo(ctx context.Context, mgmtURL, method, path, body string) error {
	api, err := rabbitmgmt.New(mgmtURL, mgmtClient)
	if err != nil {
		return fmt.Errorf("RABBITMQ_MANAGEMENT_URL: %w", err)
	}
	return api.Do(ctx, method, path, strings.NewReader(body), nil)
}

// Write lets lines take what other code prints (withPlane's warnings), line by line.
func (l *lines) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
