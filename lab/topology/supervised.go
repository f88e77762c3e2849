package topology

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"microlab/lab/stack"
	"microlab/lab/supervisor"
)

// Supervised runs the switch's stops and starts through a supervisor (`lab up`'s, or
// an end-to-end test's): the processes stack.Launch started, from the same binaries.
type Supervised struct {
	Sup   *supervisor.Supervisor
	Bin   string         // directory of the service binaries
	Scale map[string]int // instances per service, as launched
}

// Stopping says that the services are stopped, gracefully.
func (s Supervised) Stopping(names []string) string { return StoppingGracefully(names) }

// Stop stops every instance of the services, all at once (each drains its own work;
// none waits for another), and returns when all are gone.
func (s Supervised) Stop(_ context.Context, names []string) error {
	errs := make([]error, len(names))
	var wg sync.WaitGroup
	for i, n := range names {
		wg.Go(func() {
			if err := s.Sup.Stop(n); err != nil && !strings.Contains(err.Error(), "no process") {
				errs[i] = err
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// Start starts every instance of the services with cfg's environment and waits until
// all answer /readyz (bounded by ctx).
func (s Supervised) Start(ctx context.Context, cfg stack.Config, names []string) error {
	insts, err := cfg.Instances(s.Scale)
	if err != nil {
		return err
	}
	var ids []string
	for _, in := range insts {
		if !slices.Contains(names, in.Service.Name) {
			continue
		}
		env, err := cfg.Env(in.Service, in.ID)
		if err != nil {
			return fmt.Errorf("start %s: %w", in.ID, err)
		}
		env = append(slices.DeleteFunc(env, func(kv string) bool { return strings.HasPrefix(kv, "HTTP_ADDR=") }), "HTTP_ADDR="+in.Addr)
		if err := s.Sup.Start(ctx, supervisor.Proc{
			Name: in.Service.Name, Instance: in.ID,
			Path:      filepath.Join(s.Bin, in.Service.Name),
			Env:       env,
			HealthURL: in.URL() + "/readyz",
		}); err != nil {
			return err
		}
		ids = append(ids, in.ID)
	}
	return s.Sup.WaitHealthy(ctx, ids...)
}
