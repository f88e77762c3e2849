package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"microlab/lab/loadgen"
	"microlab/lab/reconcile"
	"microlab/lab/stack"
)

// The faults `lab chaos` knows, in the order --faults lists them by default.
const (
	faultKill     = "kill"     // kill -9 of each service in turn (--kill)
	faultBroker   = "broker"   // RabbitMQ stopped for --outage, then started again
	faultPostgres = "postgres" // PostgreSQL stopped for --outage, then started again
)

var chaosFaults = []string{faultKill, faultBroker, faultPostgres}

// How `lab chaos` shows on the dashboard's timeline (attached: its crash faults).
const chaosSource = "lab chaos"

const (
	recoverTimeout = 2 * time.Minute // a fault's recovery: the victim (or the whole lab) healthy again
	chaosProgress  = 5 * time.Second // how often the progress line is printed
)

const chaosUsage = "lab chaos [--rate 10/s] [--duration 15s] [--faults kill,broker,postgres] [--kill SERVICE,...] [--outage 5s] [--settle 1m] [--mix ...] [--shoppers N] [--mode choreography|orchestration] [--attach] [--no-build] [--keep] [--json FILE]"

// chaosOptions is `lab chaos`'s command line, checked.
type chaosOptions struct {
	load     loadgen.Config // Duration: the whole run (a window per step)
	window   time.Duration  // --duration: the load around each fault
	steps    []step
	outage   time.Duration
	settle   time.Duration
	mode     string
	attach   bool
	noBuild  bool
	keep     bool
	jsonPath string
}

// step is one fault of the run: kill -9 of a service, or a restart of the broker or
// the database.
type step struct {
	kind    string // faultKill, faultBroker, faultPostgres
	service string // faultKill's victim
	crash   bool   // faultKill through the control plane's crash fault (--attach)
}

func (s step) String() string {
	switch {
	case s.kind == faultKill && s.crash:
		return "crash " + s.service
	case s.kind == faultKill:
		return "kill -9 " + s.service
	case s.kind == faultBroker:
		return "RabbitMQ restart"
	default:
		return "PostgreSQL restart"
	}
}

// shopServices are the services --kill takes by default: the shop's (every service but
// the dashboard, which no saga depends on, and the monolith, which no request reaches
// unless strangler.routes sends it some: killing it would test nothing).
func shopServices() []string {
	var out []string
	for _, s := range stack.Services {
		if s.Name != stack.Dashboard && s.Name != "monolith" {
			out = append(out, s.Name)
		}
	}
	return out
}

func parseChaos(args []string) (chaosOptions, error) {
	fs := flag.NewFlagSet("chaos", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	rate := fs.String("rate", "10/s", "orders per second while the faults run (50/s, 600/m)")
	window := fs.Duration("duration", 15*time.Second, "load around each fault: one every D (a slow recovery delays the next), and D of load after the last")
	faults := fs.String("faults", strings.Join(chaosFaults, ","), "the faults, in turn: kill (each --kill service), broker, postgres")
	kill := fs.String("kill", strings.Join(shopServices(), ","), "the services kill -9 hits, one after the other")
	outage := fs.Duration("outage", 5*time.Second, "how long RabbitMQ or PostgreSQL stays stopped")
	settle := fs.Duration("settle", time.Minute, "after the load: how long orders may take to end and ledgers to agree")
	mix := fs.String("mix", loadgen.DefaultMix.String(), "outcome weights: ok, declined (card), oos (out of stock), xx (unshippable)")
	shoppers := fs.Int("shoppers", 10, "demo shoppers the orders are spread over")
	mode := fs.String("mode", "", "saga.mode of the lab's checkouts (default: the lab's setting)")
	attach := fs.Bool("attach", false, "use the lab `lab up` runs instead of starting one: kill faults only, through the control plane's crash fault")
	noBuild := fs.Bool("no-build", false, "start the binaries already built (skip go build)")
	keep := fs.Bool("keep", false, "keep the lab's databases and vhost afterwards, for inspection (not with private RabbitMQ or PostgreSQL)")
	jsonPath := fs.String("json", "", "also write the faults, the load's summary and the reconciliation to this file as JSON")
	if err := fs.Parse(args); errors.Is(err, flag.ErrHelp) {
		return chaosOptions{}, usageErrorf("%s", chaosUsage)
	} else if err != nil {
		return chaosOptions{}, usageErrorf("%v", err)
	}
	if fs.NArg() > 0 {
		return chaosOptions{}, usageErrorf("unexpected arguments %q", fs.Args())
	}
	o := chaosOptions{window: *window, outage: *outage, settle: *settle, mode: *mode, attach: *attach,
		noBuild: *noBuild, keep: *keep, jsonPath: *jsonPath}
	var err error
	if o.load.Rate, err = loadgen.ParseRate(*rate); err != nil {
		return o, usageErrorf("--%v", err)
	}
	if o.load.Mix, err = loadgen.ParseMix(*mix); err != nil {
		return o, usageErrorf("--%v", err)
	}
	if *shoppers < 1 || *shoppers > 1000 {
		return o, usageErrorf("--shoppers %d: want 1 to 1000", *shoppers)
	}
	o.load.Shoppers = *shoppers
	if o.mode != "" && o.mode != "choreography" && o.mode != "orchestration" {
		return o, usageErrorf("--mode %q: want choreography or orchestration", o.mode)
	}
	if o.window < time.Second {
		return o, usageErrorf("--duration %s: want at least 1s of load around each fault", o.window)
	}
	if o.outage <= 0 || o.outage > 5*time.Minute {
		return o, usageErrorf("--outage %s: want more than 0 and at most 5m", o.outage)
	}
	if o.settle < time.Second || o.settle > 30*time.Minute {
		return o, usageErrorf("--settle %s: want 1s to 30m", o.settle)
	}
	var victims []string
	for v := range strings.SplitSeq(*kill, ",") {
		v = strings.TrimSpace(v)
		if _, ok := stack.Find(v); !ok {
			return o, usageErrorf("--kill %q: no such service (services: %s)", v, strings.Join(stack.Names(), ", "))
		}
		if slices.Contains(victims, v) {
			return o, usageErrorf("--kill names %s twice", v)
		}
		victims = append(victims, v)
	}
	var kinds []string
	for f := range strings.SplitSeq(*faults, ",") {
		f = strings.TrimSpace(f)
		if !slices.Contains(chaosFaults, f) {
			return o, usageErrorf("--faults %q: want a list of %s", f, strings.Join(chaosFaults, ", "))
		}
		if slices.Contains(kinds, f) {
			return o, usageErrorf("--faults names %s twice", f)
		}
		kinds = append(kinds, f)
	}
	for _, f := range kinds {
		switch f {
		case faultKill:
			for _, v := range victims {
				o.steps = append(o.steps, step{kind: faultKill, service: v, crash: o.attach})
			}
		default:
			if o.attach {
				return o, usageErrorf("--attach runs kill faults only: the running lab's RabbitMQ and PostgreSQL are this machine's, which lab chaos never restarts (without --attach it restarts private ones)")
			}
			if o.keep {
				return o, usageErrorf("--keep: the %s fault runs on a private instance, removed at the end (keep works with --faults kill)", f)
			}
			o.steps = append(o.steps, step{kind: f})
		}
	}
	if o.keep && o.attach {
		return o, usageErrorf("--keep is for the lab lab chaos starts; --attach leaves the running lab as it is anyway")
	}
	planned := time.Duration(len(o.steps)) * o.window
	if planned > loadgen.MaxDuration {
		return o, usageErrorf("%d faults × --duration %s is more than %s of load", len(o.steps), o.window, loadgen.MaxDuration)
	}
	// The load lasts until the last fault has played out (runChaos closes Stop); a fault
	// whose recovery takes longer than a window only delays the next. Duration merely
	// bounds a run whose every recovery took as long as it may.
	o.load.Duration = min(loadgen.MaxDuration, planned+time.Duration(len(o.steps))*(recoverTimeout+o.outage))
	// An order may take until the end of the settling to end: only then is it lost.
	o.load.Follow = o.settle
	o.load.Prefix = "chaos"
	return o, nil
}

// chaosLab is a lab `lab chaos` can hurt: one it started (faults by SIGKILL and private
// instance restarts) or one it attached to (the control plane's crash fault).
type chaosLab interface {
	stack() stack.Config
	// dlqs says where the reconciliation reads the DLQs: the management API, or a
	// private node's own listing (ManagementURL, ListQueues).
	dlqs() reconcile.Options
	// inject carries out s and waits, within ctx, until the lab has recovered from it;
	// it returns what it did ("pid 1234 → 1240").
	inject(ctx context.Context, s step, outage time.Duration) (string, error)
	// healthy waits, within ctx, until every service answers /readyz.
	healthy(ctx context.Context) error
	close() error
}

// chaos: `lab chaos` — load through the gateway while each fault hits in turn, then a
// reconciliation of every order's ledgers; exit 1 when it is not clean.
func chaos(ctx context.Context, cfg Config, args []string, stdout, stderr io.Writer) (err error) {
	o, err := parseChaos(args)
	if err != nil {
		return err
	}
	for name, raw := range map[string]string{"ADMIN_DATABASE_URL": cfg.AdminDatabaseURL, "AMQP_URL": cfg.AMQPURL,
		"RABBITMQ_MANAGEMENT_URL": cfg.ManagementURL} {
		if err := onThisMachine(raw); err != nil {
			return usageErrorf("%s: %v: lab chaos targets only this machine", name, err)
		}
	}
	out := &lines{w: stdout}
	var lab chaosLab
	if o.attach {
		lab, err = attachLab(ctx, cfg, out)
	} else {
		lab, err = startChaosLab(ctx, cfg, o, out)
	}
	if err != nil {
		return err
	}
	defer func() {
		if cerr := lab.close(); cerr != nil {
			err = errors.Join(err, cerr)
		}
	}()
	sc := lab.stack()
	gw, _ := stack.Find("gateway")
	o.load.Gateway = sc.URL(gw)

	var dlqBefore map[string]int
	since := time.Time{}
	if o.attach {
		// The running lab has a history: hold only this run's orders to account, and only
		// the messages dead-lettered from now on.
		since = time.Now().Add(-time.Second)
		if dlqBefore, err = reconcile.DLQs(ctx, sc.AMQPURL, lab.dlqs().ManagementURL); err != nil {
			return err
		}
	}
	res, err := runChaos(ctx, lab, o, out)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout)
	res.Load.Table(stdout)
	fmt.Fprintln(stdout)

	// Recovery: every service healthy, then the ledgers given until --settle to agree
	// (a compensation may still be on its way: in choreography the refund, not the
	// release, cancels an order).
	hctx, cancel := context.WithTimeout(ctx, recoverTimeout)
	herr := lab.healthy(hctx)
	cancel()
	if herr != nil {
		out.printf("chaos: the lab did not recover: %v", herr)
	}
	accepted := make([]string, 0, len(res.Load.Orders))
	for _, p := range res.Load.Orders {
		accepted = append(accepted, p.ID)
	}
	opts := lab.dlqs()
	opts.Accepted, opts.Since, opts.DLQBefore = accepted, since, dlqBefore
	res.Report, err = settleReconcile(ctx, sc, opts, o.settle, out)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout)
	res.Report.Table(stdout)
	if o.jsonPath != "" {
		raw, err := json.MarshalIndent(res, "", "  ")
		if err != nil {
			return err
		}
		if err := os.WriteFile(o.jsonPath, raw, 0o644); err != nil {
			return err
		}
	}
	failed := herr != nil
	for _, f := range res.Faults {
		failed = failed || f.Error != ""
	}
	if failed {
		fmt.Fprintln(stdout, "chaos: a fault could not be injected, or the lab did not recover from it (see above)")
	}
	if failed || !res.Report.Clean() {
		return errReported
	}
	return nil
}

// chaosResult is a run: what was done, the load's summary, the reconciliation.
type chaosResult struct {
	Lab    chaosLabInfo      `json:"lab"`
	Faults []faultResult     `json:"faults"`
	Load   loadgen.Summary   `json:"load"`
	Report *reconcile.Report `json:"report"`
}

// chaosLabInfo says where the lab's data is (for --keep, and for a test that
// reconciles the same lab itself).
type chaosLabInfo struct {
	DBPrefix      string `json:"dbPrefix"`
	VHost         string `json:"vhost"`
	AdminDatabase string `json:"adminDatabase"` // the URL, credentials included (this machine's, trust or dev ones)
	AMQP          string `json:"amqp"`
	Management    string `json:"management"` // "" with a private RabbitMQ (rabbitmqctl lists its DLQs)
	Attached      bool   `json:"attached"`
}

// faultResult is one step as it went.
type faultResult struct {
	Fault     string        `json:"fault"`
	At        time.Duration `json:"atNs"`        // since the load started
	Recovered time.Duration `json:"recoveredNs"` // from the injection until the lab had recovered
	Detail    string        `json:"detail,omitempty"`
	Error     string        `json:"error,omitempty"`
}

// runChaos runs the load, and each step of o in its window while it lasts: a quarter
// into the window, so that every fault hits a shop that is busy, and not before the
// previous fault has been recovered from. Once the last has, the load goes on for the
// rest of a window (at least three quarters of one), then stops.
func runChaos(ctx context.Context, lab chaosLab, o chaosOptions, out *lines) (*chaosResult, error) {
	sc := lab.stack()
	res := &chaosResult{Lab: chaosLabInfo{DBPrefix: sc.DBPrefix, AdminDatabase: sc.AdminDatabaseURL, AMQP: sc.AMQPURL,
		Management: lab.dlqs().ManagementURL, Attached: o.attach}}
	res.Lab.VHost, _ = vhostName(sc.AMQPURL)
	var (
		mu      sync.Mutex
		last    loadgen.Progress
		current = "no fault yet"
		started = make(chan time.Time, 1)
	)
	o.load.Progress = func(p loadgen.Progress) {
		mu.Lock()
		defer mu.Unlock()
		if p.Phase == "preparing" {
			if p.Ready == 0 {
				out.printf("chaos: logging %d shoppers in", p.Shoppers)
			}
			return
		}
		if last.Phase == "" {
			started <- time.Now().Add(-p.Elapsed)
		}
		last = p
	}
	parent := ctx
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stopLoad := make(chan struct{})
	o.load.Stop = stopLoad
	loadDone := make(chan struct{})
	type loadResult struct {
		s   loadgen.Summary
		err error
	}
	loaded := make(chan loadResult, 1)
	go func() {
		s, err := loadgen.Run(ctx, o.load)
		close(loadDone)
		loaded <- loadResult{s, err}
	}()

	var start time.Time
	select {
	case start = <-started:
	case r := <-loaded:
		if r.err != nil {
			return nil, fmt.Errorf("load: %w", r.err)
		}
		return nil, errors.New("load: ended before it started")
	}
	out.printf("chaos: %g orders/s, %d fault(s), one every %s (about %s of load)", o.load.Rate, len(o.steps), o.window,
		time.Duration(len(o.steps))*o.window)

	ticker := time.NewTicker(chaosProgress)
	defer ticker.Stop()
	progress := func() {
		mu.Lock()
		p, what := last, current
		mu.Unlock()
		out.printf("%5.0fs  %-30s placed %5d  final %5d  in flight %4d  refused %d  skipped %d",
			time.Since(start).Seconds(), what, p.Placed, p.Finished, p.InFlight, p.Rejected, p.Skipped)
	}
	injected := make(chan struct{})
	go func() {
		defer close(injected)
		defer close(stopLoad)
		calm := start.Add(time.Duration(len(o.steps)) * o.window) // the planned end of the load
		for i, s := range o.steps {
			at := start.Add(time.Duration(i)*o.window + o.window/4)
			select {
			case <-ctx.Done():
				return
			case <-loadDone: // the load ran out (its bound): the rest would hit an idle shop
				return
			case <-time.After(time.Until(at)):
			}
			name := fmt.Sprintf("[%d/%d] %s", i+1, len(o.steps), s)
			mu.Lock()
			current = name
			mu.Unlock()
			out.printf("%5.0fs  %s", time.Since(start).Seconds(), name)
			t0 := time.Now()
			ictx, icancel := context.WithTimeout(ctx, recoverTimeout+o.outage)
			detail, err := lab.inject(ictx, s, o.outage)
			icancel()
			fr := faultResult{Fault: s.String(), At: t0.Sub(start), Recovered: time.Since(t0), Detail: detail}
			if err != nil {
				fr.Error = err.Error()
				out.printf("%5.0fs  %s: %v", time.Since(start).Seconds(), name, err)
			} else {
				out.printf("%5.0fs  %s: recovered after %s (%s)", time.Since(start).Seconds(), name,
					fr.Recovered.Round(100*time.Millisecond), detail)
			}
			mu.Lock()
			res.Faults = append(res.Faults, fr)
			current = "recovered: " + s.String()
			mu.Unlock()
			if after := time.Now().Add(o.window * 3 / 4); after.After(calm) {
				calm = after
			}
		}
		// The aftermath of the last fault under load too.
		select {
		case <-ctx.Done():
		case <-loadDone:
		case <-time.After(time.Until(calm)):
		}
	}()
	for {
		select {
		case <-ticker.C:
			progress()
		case r := <-loaded:
			<-injected // a fault under way when the load ran out ends first: it recovers, or times out
			if r.err != nil {
				return nil, fmt.Errorf("load: %w", r.err)
			}
			if parent.Err() != nil {
				return nil, errors.New("interrupted: no reconciliation")
			}
			res.Load = r.s
			progress()
			if n := len(res.Faults); n < len(o.steps) {
				for _, s := range o.steps[n:] {
					res.Faults = append(res.Faults, faultResult{Fault: s.String(), Error: "not injected: the load ran out first (recoveries took too long)"})
				}
			}
			return res, nil
		}
	}
}

// settleReconcile reconciles until the report is clean or settle has passed (or ctx
// ends), and returns the last report. Each round reads the databases afresh, so a
// database still restarting is waited for.
func settleReconcile(ctx context.Context, sc stack.Config, opts reconcile.Options, settle time.Duration, out *lines) (*reconcile.Report, error) {
	deadline := time.Now().Add(settle)
	said := false
	for {
		rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		r, err := reconcile.Run(rctx, sc, opts)
		cancel()
		switch {
		case err == nil && r.Clean():
			return r, nil
		case ctx.Err() != nil:
			return nil, ctx.Err()
		case time.Now().After(deadline):
			if err != nil {
				return nil, err
			}
			return r, nil
		case !said:
			said = true
			what := fmt.Sprint(err)
			if err == nil {
				what = fmt.Sprintf("%d findings, %d DLQ messages", len(r.Findings), r.DLQMessages())
			}
			out.printf("chaos: the ledgers do not agree yet (%s): waiting up to %s", what, settle)
		}
		time.Sleep(time.Second)
	}
}

// lines serialises the lines of concurrent goroutines.
type lines struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lines) printf(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	fmt.Fprintf(l.w, format+"\n", args...)
}

// onThisMachine checks that a URL names this machine: a loopback address, localhost,
// or no host (a Unix socket).
func onThisMachine(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("not a URL: %w", err)
	}
	host := u.Hostname()
	if host == "" || host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return nil
	}
	return fmt.Errorf("host %s is not this machine (127.0.0.1)", host)
}

// vhostName is the vhost an AMQP URL names ("/" when none).
func vhostName(amqpURL string) (string, error) {
	u, err := url.Parse(amqpURL)
	if err != nil {
		return "", err
	}
	v, err := url.PathUnescape(strings.TrimPrefix(u.EscapedPath(), "/"))
	if err != nil || v == "" {
		return "/", err
	}
	return v, nil
}
