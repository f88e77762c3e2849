package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"microlab/lab/scaling"
	"microlab/lab/stack"
	"microlab/lab/supervisor"
	"microlab/lab/topology"
	"microlab/services/platform/bus"
	"microlab/services/platform/control"
)

const (
	provisionTimeout = time.Minute
	buildTimeout     = 10 * time.Minute
	startTimeout     = 2 * time.Minute // from the first start to every /readyz answering
	stopTimeout      = 20 * time.Second
)

// up runs the whole shop until ctx ends (Ctrl-C), then stops it. Steps, each failing
// fast with one clear message: RabbitMQ's plugins (enabled here when they are off:
// ensurePlugins), dependencies, databases, binaries (Jaeger's too, with a progress
// line: minutes the first time), Jaeger and Prometheus, the services, health. A
// missing Prometheus or Jaeger binary (with --no-build) is not a failure: the shop runs
// without them, and the summary says so once, with what the learner misses.
func up(ctx context.Context, cfg Config, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("up", flag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors are reported once, by run
	scale := map[string]int{}
	fs.Func("scale", "run N instances of a service, e.g. payments=2 (repeatable; comma-separated lists too)", func(v string) error {
		return parseScale(v, scale)
	})
	noBuild := fs.Bool("no-build", false, "start the binaries already built (skip go build)")
	withPprof := fs.Bool("pprof", false, "serve Go's profiler at /debug/pprof/ on every service (go tool pprof http://127.0.0.1:8103/debug/pprof/profile)")
	if err := fs.Parse(args); errors.Is(err, flag.ErrHelp) {
		return usageErrorf("lab up [--scale service=N]... [--no-build] [--pprof]")
	} else if err != nil {
		return usageErrorf("%v", err)
	}
	if fs.NArg() > 0 {
		return usageErrorf("unexpected arguments %q", fs.Args())
	}
	if err := ownVhost(cfg); err != nil {
		return err
	}
	sc := cfg.Stack()
	if *withPprof {
		sc.Extra = append(sc.Extra, "PPROF=true")
	}
	insts, err := sc.Instances(scale)
	if err != nil {
		return usageErrorf("%v", err)
	}
	bin, err := cfg.Bin()
	if err != nil {
		return err
	}

	// What the lab runs without, said once in the summary (before "lab is up").
	var without []string
	// A fresh RabbitMQ has its management and Prometheus plugins off: enabled here when
	// lab can, else one line saying how.
	cs := checks(cfg, !*noBuild)
	note, err := ensurePlugins(ctx, cfg, cs, stdout)
	var pe pluginError
	if errors.As(err, &pe) {
		fmt.Fprintln(stderr, pe.Error())
		return errReported
	} else if err != nil {
		return err
	}
	if note != "" {
		without = append(without, note)
	}
	if m := missing(runChecks(ctx, requiredOnly(cs))); len(m) > 0 {
		for _, r := range m {
			fmt.Fprintln(stderr, r.line())
		}
		fmt.Fprintln(stderr, "lab up: dependencies missing (lab doctor shows everything)")
		return errReported
	}

	pctx, cancel := context.WithTimeout(ctx, provisionTimeout)
	err = stack.Provision(pctx, sc)
	if err == nil {
		// Where the data is (db.topology, as the last switch left it): the services start there.
		sc.Topology, err = topology.Where(pctx, sc)
	}
	if err == nil && sc.Shared() {
		err = topology.ProvisionShared(pctx, sc)
	}
	if err == nil {
		// --scale sets the scale.<service> settings; without it the stored scale is
		// followed (a restarted lab keeps the class's scale).
		scale, err = initialScale(pctx, sc, scale)
	}
	cancel()
	if err != nil {
		return fmt.Errorf("databases: %w", err)
	}
	if insts, err = sc.Instances(scale); err != nil {
		return err
	}

	jaegerBin := filepath.Join(bin, "jaeger")
	if *noBuild {
		for _, s := range stack.Services {
			if _, err := os.Stat(filepath.Join(bin, s.Name)); err != nil {
				return fmt.Errorf("no binary for %s in %s (run lab up without --no-build): %w", s.Name, bin, err)
			}
		}
		if _, err := os.Stat(jaegerBin); err != nil {
			without = append(without, fmt.Sprintf("Jaeger (no binary in %s; lab up without --no-build builds it): traces are not collected", bin))
			jaegerBin = ""
		}
	} else {
		root, err := moduleRoot()
		if err != nil {
			return err
		}
		bctx, cancel := context.WithTimeout(ctx, buildTimeout)
		err = stack.Build(bctx, root, bin, stdout)
		cancel()
		if err != nil {
			return err
		}
		bctx, cancel = context.WithTimeout(ctx, buildTimeout)
		err = stack.BuildJaeger(bctx, root, bin, stdout)
		cancel()
		if err != nil {
			return err
		}
	}
	run, err := cfg.Run()
	if err != nil {
		return err
	}

	// The supervisor's own lines (started, crashed, restarting) go to stderr without
	// timestamps; the services' JSON logs, prefixed, to stdout.
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) == 0 && a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		},
	}))
	// Jaeger and Prometheus have a supervisor of their own: they stop after the
	// services, which flush their last spans on the way out.
	obs := supervisor.New(log, stdout)
	sup := supervisor.New(log, stdout)
	stop := func() error {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), stopTimeout)
		defer cancel()
		return errors.Join(sup.StopAll(sctx), obs.StopAll(sctx))
	}
	lctx, cancel := context.WithTimeout(ctx, startTimeout)
	o, err := startObservability(lctx, sc, obs, jaegerBin, run, scale, stderr)
	if err == nil {
		err = stack.Launch(lctx, sc, sup, bin, scale)
	}
	cancel()
	if err != nil {
		stopErr := stop()
		if ctx.Err() != nil { // interrupted while starting: a clean stop is success
			return stopErr
		}
		return errors.Join(err, stopErr)
	}

	fmt.Fprint(stdout, urls(insts, scale))
	fmt.Fprint(stdout, o.lines)
	for _, w := range append(without, o.without...) {
		fmt.Fprintln(stdout, "running without", w)
	}
	fmt.Fprint(stdout, composeOnly)
	fmt.Fprintln(stdout, "lab is up; Ctrl-C stops everything")
	// One Scaler owns the instances: the scale follower changes their number, a topology
	// switch restarts every one there is.
	scaler := scaling.New(sc, sup, bin, scale)
	scaler.Targets = o.targets
	scaler.Progress = func(step string) { fmt.Fprintln(stdout, "lab:", step) }
	var followed sync.WaitGroup
	followed.Go(func() {
		if err := followTopology(ctx, sc, scaler, stdout, log); err != nil {
			fmt.Fprintln(stderr, "lab: db.topology changes are not applied:", err)
		}
	})
	followed.Go(func() {
		if err := followScale(ctx, sc, scaler, log); err != nil {
			fmt.Fprintln(stderr, "lab: scale.<service> changes are not applied:", err)
		}
	})
	<-ctx.Done()
	followed.Wait() // a switch under way ends first (interrupted, its data where it was)
	fmt.Fprintln(stderr, "lab: stopping every service")
	if err := stop(); err != nil {
		return err
	}
	fmt.Fprintln(stderr, "lab: stopped")
	return nil
}

// followTopology applies the db.topology setting while the lab runs: a change restarts
// every service with a database on the other topology, its data carried over
// (lab/topology), each step printed and recorded for the dashboard.
func followTopology(ctx context.Context, sc stack.Config, scaler *scaling.Scaler, stdout io.Writer, log *slog.Logger) error {
	root, err := moduleRoot() // the services' migrations, the same files their binaries embed
	if err != nil {
		return fmt.Errorf("cannot switch: %w", err)
	}
	return withControl(ctx, sc, "lab-up/topology", log, func(store *control.Store, conn *bus.Conn) error {
		sw := &topology.Switcher{Cfg: sc, Migrations: topology.DirMigrations(root),
			Services: scaler,
			Progress: func(step string) { fmt.Fprintln(stdout, "lab:", step) }}
		return topology.Follow(ctx, sw, store, conn, bus.NewPublisher(conn, log), log)
	})
}

// followScale applies the scale.<service> settings while the lab runs: a change starts
// or stops instances (lab/scaling), each step printed.
func followScale(ctx context.Context, sc stack.Config, scaler *scaling.Scaler, log *slog.Logger) error {
	return withControl(ctx, sc, "lab-up/scale", log, func(store *control.Store, conn *bus.Conn) error {
		return scaling.Follow(ctx, scaler, store, conn, bus.NewPublisher(conn, log), log)
	})
}

// withControl runs follow with the lab's control store and a broker connection named
// name (lab.control's announcements), closing both after it.
func withControl(ctx context.Context, sc stack.Config, name string, log *slog.Logger, follow func(*control.Store, *bus.Conn) error) error {
	labURL, err := sc.DatabaseURL(sc.DBName(stack.LabDB))
	if err != nil {
		return err
	}
	store, err := control.OpenStore(ctx, labURL)
	if err != nil {
		return err
	}
	defer store.Close()
	conn, err := bus.Dial(ctx, sc.AMQPURL, name, log)
	if err != nil {
		return err
	}
	defer conn.Close()
	return follow(store, conn)
}

// initialScale stores --scale as the scale settings and returns the scale to launch
// (scaling.Initial).
func initialScale(ctx context.Context, sc stack.Config, asked map[string]int) (map[string]int, error) {
	labURL, err := sc.DatabaseURL(sc.DBName(stack.LabDB))
	if err != nil {
		return nil, err
	}
	store, err := control.OpenStore(ctx, labURL)
	if err != nil {
		return nil, err
	}
	defer store.Close()
	return scaling.Initial(ctx, store, asked, "lab up --scale")
}

// composeOnly is what the native lab never has: Grafana is no Go program, and the
// native Jaeger is built from Jaeger's Go module, which has no UI assets.
const composeOnly = `not in the native lab: Grafana (compose only; the dashboard's Metrics page charts the same Prometheus)
not in the native lab: Jaeger's UI (compose only; its API answers here, and the dashboard shows every trace)
`

// observed is what startObservability started, for up's summary.
type observed struct {
	lines   string   // a URL line for each process started (or found running)
	without []string // what is missing, and what it costs: "running without " each
	// targets rewrites Prometheus' targets for another scale (nil without a Prometheus).
	targets func(map[string]int) error
}

// startObservability starts the lab's Jaeger (unless jaegerBin is "") and Prometheus
// (if installed) under obs, their files in run/jaeger and run/prometheus, before the
// services, so that their first spans and scrapes are not lost. What is missing, or
// has its ports taken, goes into without, and lab goes on without it; a Jaeger already
// running on the ports is used, and said so on notes.
func startObservability(ctx context.Context, sc stack.Config, obs *supervisor.Supervisor, jaegerBin, run string, scale map[string]int, notes io.Writer) (observed, error) {
	var o observed
	var b strings.Builder
	if jaegerBin != "" {
		j := sc.Jaeger(jaegerBin, filepath.Join(run, "jaeger"))
		switch {
		case j.Answering(ctx):
			fmt.Fprintf(notes, "jaeger: one already answers at %s (and takes OTLP on %s): the services export to it\n", j.QueryURL(), j.OTLPEndpoint())
			fmt.Fprintf(&b, "%-15s %s  (already running, not started by lab)\n", "jaeger", j.QueryURL())
		default:
			err := j.Start(ctx, obs)
			if errors.Is(err, stack.ErrPortTaken) {
				o.without = append(o.without, fmt.Sprintf("Jaeger (%v; LAB_PORT_OFFSET shifts every port): traces are not collected", err))
				break
			}
			if err != nil {
				return observed{}, err
			}
			fmt.Fprintf(&b, "%-15s %s  (API: /api/traces/<traceId>; log: %s)\n", "jaeger", j.QueryURL(), j.LogFile())
		}
	}
	o.lines = b.String()
	promBin, err := stack.FindPrometheus()
	if err != nil {
		o.without = append(o.without, fmt.Sprintf("Prometheus (not installed: %s): metrics are not collected, and the dashboard's Metrics page says so", stack.FixPrometheus))
		return o, nil
	}
	p := sc.Prometheus(promBin, filepath.Join(run, "prometheus"))
	targets, err := sc.Targets(scale)
	if err != nil {
		return observed{}, err
	}
	if err := p.WriteTargets(targets); err != nil {
		return observed{}, err
	}
	if err := p.Start(ctx, obs); err != nil {
		if errors.Is(err, stack.ErrPortTaken) {
			o.without = append(o.without, fmt.Sprintf("Prometheus (%v; Debian's prometheus service? systemctl disable --now prometheus): metrics are not collected", err))
			return o, nil
		}
		return observed{}, err
	}
	fmt.Fprintf(&b, "%-15s %s  (log: %s)\n", "prometheus", p.URL(), p.LogFile())
	o.lines = b.String()
	o.targets = func(scale map[string]int) error {
		targets, err := sc.Targets(scale)
		if err != nil {
			return err
		}
		return p.WriteTargets(targets)
	}
	return o, nil
}

// parseScale adds "name=N[,name=N]" to scale.
func parseScale(v string, scale map[string]int) error {
	for part := range strings.SplitSeq(v, ",") {
		name, n, ok := strings.Cut(strings.TrimSpace(part), "=")
		count, err := strconv.Atoi(n)
		if !ok || name == "" || err != nil {
			return fmt.Errorf("want service=N, got %q", part)
		}
		scale[name] = count
	}
	return nil
}

func requiredOnly(cs []check) []check {
	var out []check
	for _, c := range cs {
		if c.required {
			out = append(out, c)
		}
	}
	return out
}

// urls lists one line per instance: the service name, or the instance id for a scaled
// service, and its base URL.
func urls(insts []stack.Instance, scale map[string]int) string {
	var b strings.Builder
	for _, in := range insts {
		name := in.Service.Name
		if scale[name] > 1 || in.Version != "" {
			name = in.ID
		}
		fmt.Fprintf(&b, "%-15s %s\n", name, in.URL())
	}
	return b.String()
}

// moduleRoot finds the microlab module's root directory: the working directory or the
// nearest parent whose go.mod declares module microlab.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("find repository: %w", err)
	}
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && modulePath(b) == "microlab" {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("not inside the microlab repository (no go.mod with module microlab): cd into it, or use --no-build")
		}
		dir = parent
	}
}

// modulePath returns the module path a go.mod declares.
func modulePath(gomod []byte) string {
	for line := range strings.Lines(string(gomod)) {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(line), "module "); ok {
			return strings.Trim(strings.TrimSpace(rest), `"`)
		}
	}
	return ""
}

// ownVhost refuses a second lab (LAB_DB_PREFIX or LAB_PORT_OFFSET set) on RabbitMQ's
// default virtual host: its databases and ports would be its own, but not its queues,
// so its services would consume the first lab's messages and it would lose them.
func ownVhost(cfg Config) error {
	if cfg.DBPrefix == "" && cfg.PortOffset == 0 {
		return nil
	}
	uri, err := amqp.ParseURI(cfg.AMQPURL)
	if err != nil || uri.Vhost != "/" {
		return nil // a bad URL is reported where it is dialled
	}
	return usageErrorf("LAB_DB_PREFIX or LAB_PORT_OFFSET makes a second lab: give it a RabbitMQ vhost of its own in AMQP_URL (amqp://guest:guest@127.0.0.1:5672/NAME); on the default one its services would take the other lab's messages")
}
