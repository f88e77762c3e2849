// Package scaling runs the lab's services at the scale the control plane asks for: the
// settings scale.<service> (control.ScaleKey) say how many instances of each queue
// consumer should run, and Follow starts or stops instances under the lab's supervisor
// when one changes, while the lab runs. `lab up` and the end-to-end tests' labs share
// this one code path.
//
// catalog, an HTTP service, is scalable too: its extra instances register in the service
// registry (package registry), where the gateway finds them (gateway.discovery=registry).
//
// catalog's second version runs the same way: deploy.catalog.v2=good|bad starts one
// more catalog, catalog-v2-1 with VERSION=v2 (stack.CatalogV2), registered in the
// registry as v2; off stops it. Which share of traffic it gets is the gateway's business
// (deploy.catalog.weights), not lab up's.
//
// The extra instances of a queue consumer are competing consumers: each subscribes to the service's one
// queue (<service>.events) and the broker hands every message to one of them. Stopping
// one is graceful (SIGTERM): it finishes the messages it is handling, and the ones it
// had prefetched but not started go back to the queue, to the instances that remain.
package scaling

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"

	"microlab/lab/stack"
	"microlab/lab/supervisor"
	"microlab/lab/topology"
	"microlab/services/platform/bus"
	"microlab/services/platform/control"
)

// Scaler owns the number of instances of each service the lab runs under a supervisor.
// It is also the topology switch's way to the processes (topology.Services): a switch
// stops and restarts every instance there is at the moment, and a scale change that
// comes while a service is stopped for a switch waits for its restart. Its methods are
// safe for concurrent use.
type Scaler struct {
	Sup *supervisor.Supervisor
	Bin string // directory of the service binaries
	// Targets, if not nil, is told the new scale after every change: lab up rewrites
	// Prometheus' file_sd targets with it (stack.Config.Targets), so a new instance is
	// scraped and a stopped one no longer is.
	Targets func(scale map[string]int) error
	// Progress, if not nil, hears every step ("scale shipping 1 → 2: starting
	// shipping-2", ...), for the terminal.
	Progress func(step string)

	mu      sync.Mutex
	cfg     stack.Config    // the environment of a new instance (its Topology follows switches)
	scale   map[string]int  // instances running (or to run, for a stopped service)
	stopped map[string]bool // stopped by a topology switch, not yet started again
}

// New returns a Scaler for the instances stack.Launch started with cfg and scale.
func New(cfg stack.Config, sup *supervisor.Supervisor, bin string, scale map[string]int) *Scaler {
	return &Scaler{Sup: sup, Bin: bin, cfg: cfg, scale: maps.Clone(scale), stopped: map[string]bool{}}
}

// Scale returns a copy of the current scale (services absent run once).
func (s *Scaler) Scale() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.scale)
}

// Instances is how many instances of service run.
func (s *Scaler) Instances(service string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return max(s.scale[service], 1)
}

func (s *Scaler) progress(format string, args ...any) {
	if s.Progress != nil {
		s.Progress(fmt.Sprintf(format, args...))
	}
}

// To runs service as n instances: it starts the missing ones (from the highest number
// running up) and waits until each answers /readyz, or stops the highest-numbered ones
// (gracefully), then rewrites the targets. On a failed start the instances it started
// are stopped again and the scale stays what it was.
func (s *Scaler) To(ctx context.Context, service string, n int) error {
	if _, err := (stack.Config{}).Instances(map[string]int{service: n}); err != nil {
		return err // unknown service, or beyond the bounds
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	have := max(s.scale[service], 1)
	if n == have {
		return nil
	}
	if s.stopped[service] { // a topology switch restarts it, at this scale
		s.scale[service] = n
		return nil
	}
	insts, err := s.cfg.Instances(map[string]int{service: max(n, have)})
	if err != nil {
		return err
	}
	var mine []stack.Instance // instance 1..max(n, have) of service
	for _, in := range insts {
		if in.Service.Name == service {
			mine = append(mine, in)
		}
	}
	if n > have {
		var ids []string
		for _, in := range mine[have:n] {
			s.progress("scale %s %d → %d: starting %s on %s", service, have, n, in.ID, in.Addr)
			p, err := s.cfg.Proc(in, s.Bin)
			if err == nil {
				err = s.Sup.Start(ctx, p)
			}
			if err != nil {
				return errors.Join(fmt.Errorf("start %s: %w", in.ID, err), s.stop(ids))
			}
			ids = append(ids, in.ID)
		}
		if err := s.Sup.WaitHealthy(ctx, ids...); err != nil {
			s.progress("scale %s: %s not healthy, stopping it again: %v", service, strings.Join(ids, ", "), err)
			return errors.Join(err, s.stop(ids))
		}
		if slices.Contains(control.DiscoveredServices, service) {
			s.progress("scale %s: %s healthy, registered in the service registry (the gateway uses it with gateway.discovery=registry)", service, strings.Join(ids, ", "))
		} else {
			s.progress("scale %s: %s healthy, consuming from %s.events", service, strings.Join(ids, ", "), service)
		}
	} else {
		var ids []string
		for i := have - 1; i >= n; i-- {
			ids = append(ids, mine[i].ID)
		}
		s.progress("scale %s %d → %d: stopping %s (in-flight messages finish; prefetched ones go back to %s.events)",
			service, have, n, strings.Join(ids, ", "), service)
		if err := s.stop(ids); err != nil {
			// Gone all the same: an instance that ignored SIGTERM was killed (what it
			// held is redelivered, unacked), and the supervisor forgot it.
			s.scale[service] = n
			return errors.Join(err, s.writeTargets())
		}
		s.progress("scale %s: %s stopped", service, strings.Join(ids, ", "))
	}
	s.scale[service] = n
	if s.Targets != nil {
		if err := s.writeTargets(); err != nil {
			return fmt.Errorf("scale %s: %w", service, err)
		}
		s.progress("scale %s: Prometheus scrapes %d instance(s)", service, n)
	}
	s.progress("scale %s is %d", service, n)
	return nil
}

// CatalogV2 runs catalog's v2 instance (stack.CatalogV2) or stops it: started, it must
// answer /readyz (it registers itself as v2 in the service registry), then the targets
// are rewritten so Prometheus scrapes it. A stop is graceful: it leaves the registry
// first, so the gateway stops sending to it before it stops serving.
func (s *Scaler) CatalogV2(ctx context.Context, on bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if (s.scale[stack.CatalogV2] == 1) == on {
		return nil
	}
	want := map[bool]int{false: 0, true: 1}[on]
	if s.stopped["catalog"] { // a topology switch restarts catalog, v2 with it (or not)
		s.scale[stack.CatalogV2] = want
		return nil
	}
	insts, err := s.cfg.Instances(map[string]int{stack.CatalogV2: 1})
	if err != nil {
		return err
	}
	var v2 stack.Instance
	for _, in := range insts {
		if in.Version == "v2" {
			v2 = in
		}
	}
	if on {
		s.progress("deploy catalog v2: starting %s on %s (VERSION=v2)", v2.ID, v2.Addr)
		p, err := s.cfg.Proc(v2, s.Bin)
		if err == nil {
			err = s.Sup.Start(ctx, p)
		}
		if err != nil {
			return fmt.Errorf("start %s: %w", v2.ID, err)
		}
		if err := s.Sup.WaitHealthy(ctx, v2.ID); err != nil {
			s.progress("deploy catalog v2: %s not healthy, stopping it again: %v", v2.ID, err)
			return errors.Join(err, s.stop([]string{v2.ID}))
		}
		s.progress("deploy catalog v2: %s healthy, registered as v2 (it gets the share deploy.catalog.weights gives v2)", v2.ID)
	} else {
		s.progress("deploy catalog v2: stopping %s", v2.ID)
		if err := s.stop([]string{v2.ID}); err != nil {
			s.scale[stack.CatalogV2] = 0
			return errors.Join(err, s.writeTargets())
		}
		s.progress("deploy catalog v2: %s stopped", v2.ID)
	}
	s.scale[stack.CatalogV2] = want
	return s.writeTargets()
}

// writeTargets tells Targets the current scale. Called with mu held.
func (s *Scaler) writeTargets() error {
	if s.Targets == nil {
		return nil
	}
	return s.Targets(maps.Clone(s.scale))
}

// stop stops the instances ids, all at once, and returns when they are gone.
func (s *Scaler) stop(ids []string) error {
	errs := make([]error, len(ids))
	var wg sync.WaitGroup
	for i, id := range ids {
		wg.Go(func() { errs[i] = s.Sup.Stop(id) })
	}
	wg.Wait()
	return errors.Join(errs...)
}

// Stopping says that the services are stopped, gracefully (topology.Services).
func (s *Scaler) Stopping(names []string) string { return topology.StoppingGracefully(names) }

// Stop stops every instance of the services (topology.Services): until Start, a scale
// change only records the number they will restart with.
func (s *Scaler) Stop(ctx context.Context, names []string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, n := range names {
		s.stopped[n] = true
	}
	return s.supervised().Stop(ctx, names)
}

// Start starts every instance of the services, at the current scale, with cfg's
// environment (topology.Services); later instances get cfg's environment too.
func (s *Scaler) Start(ctx context.Context, cfg stack.Config, names []string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cfg = cfg
	for _, n := range names {
		delete(s.stopped, n)
	}
	if err := s.supervised().Start(ctx, cfg, names); err != nil {
		return err
	}
	return s.writeTargets() // a scale may have changed meanwhile
}

// Initial stores the scale asked for at start (lab up --scale) as the settings of the
// services that have one, with source, and returns the scale to launch with: what was
// asked for, and for every other scalable service what its setting says (a restarted
// lab keeps the class's scale).
func Initial(ctx context.Context, store *control.Store, asked map[string]int, source string) (map[string]int, error) {
	scale := maps.Clone(asked)
	if scale == nil {
		scale = map[string]int{}
	}
	for _, svc := range slices.Sorted(maps.Keys(asked)) {
		if _, ok := control.Lookup(control.ScaleKey(svc)); !ok {
			continue // no setting (an HTTP-only service): scaled at start only
		}
		if _, err := store.Set(ctx, control.ScaleKey(svc), strconv.Itoa(asked[svc]), source); err != nil {
			return nil, err
		}
	}
	cur, err := store.Load(ctx)
	if err != nil {
		return nil, err
	}
	for _, svc := range control.ScaleServices {
		if _, ok := asked[svc]; !ok && cur.Scale(svc) > 1 {
			scale[svc] = cur.Scale(svc)
		}
	}
	if cur.CatalogV2() != control.V2Off {
		scale[stack.CatalogV2] = 1
	}
	return scale, nil
}

// Follow applies the scale.<service> settings (and deploy.catalog.v2) until ctx ends: at start and at every
// change (announced on lab.control, or seen at the watcher's periodic re-read) it runs
// each service at the scale its setting names. A change that fails leaves the service as
// it was and sets the setting back to that, through the control plane, with source "lab
// up", so the switchboard and the timeline say what runs.
func Follow(ctx context.Context, s *Scaler, store *control.Store, conn *bus.Conn, pub *bus.Publisher, log *slog.Logger) error {
	plane := &control.Plane{Store: store, Pub: pub}
	return control.Follow(ctx, store, conn, log, func(cur control.Settings) {
		for _, svc := range control.ScaleServices {
			want := cur.Scale(svc)
			if want == s.Instances(svc) {
				continue
			}
			if err := s.To(ctx, svc, want); err != nil {
				if ctx.Err() != nil {
					return
				}
				log.Error("scale change failed", "service", svc, "to", want, "err", err)
				s.progress("scale %s → %d failed, %d instance(s) run: %v", svc, want, s.Instances(svc), err)
				if _, err := plane.Set(context.WithoutCancel(ctx), control.ScaleKey(svc), strconv.Itoa(s.Instances(svc)), "lab up"); err != nil && !errors.Is(err, control.ErrNotAnnounced) {
					log.Error("scale: set back", "service", svc, "err", err)
				}
			}
		}
		// deploy.catalog.v2: good and bad are the same process (the bug is v2's own
		// reading of the setting); only off and on differ here.
		on := cur.CatalogV2() != control.V2Off
		if err := s.CatalogV2(ctx, on); err != nil {
			if ctx.Err() != nil {
				return
			}
			log.Error("deploy catalog v2 failed", "on", on, "err", err)
			s.progress("deploy catalog v2 failed: %v", err)
			if on { // it does not run: say so where the learner looks
				if _, err := plane.Set(context.WithoutCancel(ctx), control.DeployCatalogV2, control.V2Off, "lab up"); err != nil && !errors.Is(err, control.ErrNotAnnounced) {
					log.Error("deploy catalog v2: set back", "err", err)
				}
			}
		}
	})
}

// supervised is the topology package's way of stopping and starting whole services,
// at the current scale. Called with mu held.
func (s *Scaler) supervised() topology.Supervised {
	return topology.Supervised{Sup: s.Sup, Bin: s.Bin, Scale: s.scale}
}
