package e2e

import (
	"context"
	"sync"
	"testing"
	"time"

	"microlab/lab/stack"
	"microlab/lab/topology"
	"microlab/services/platform/control"
	"microlab/services/platform/pg"
	"microlab/services/platform/testenv"
)

// followForExercises runs topology.Follow on the exercises' lab until the test ends, as
// `lab up` does (lab/up.go, followTopology): an exercise that sets db.topology through
// the dashboard (06-shared-database) gets the switch a learner gets. It returns the
// switcher, for settle.
func (l *lab) followForExercises(t *testing.T) *topology.Switcher {
	t.Helper()
	t.Cleanup(func() { // before the roles go (startLab's cleanup): they own its schemas
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_ = pg.DropShared(ctx, l.cfg.AdminDatabaseURL, l.cfg.DBName(stack.SharedDB))
	})
	// The processes are lab up's: its scaler when the lab follows scale.<service> too
	// (a switch restarts every instance there is), else the launched scale.
	var services topology.Services = topology.Supervised{Sup: l.sup, Bin: binaries(t), Scale: l.scale}
	if l.scaler != nil {
		services = l.scaler
	}
	return l.runFollow(t, &startLocked{t: t, Services: services}, func(step string) { t.Log("db.topology switch:", step) })
}

// startLocked holds the machine's start lock from a switch's stop to its start: while
// the services are stopped their ports are free, and another test's lab choosing its
// ports then could take them (as switchUnderTrickle does around its switches).
type startLocked struct {
	topology.Services
	t      *testing.T
	mu     sync.Mutex
	unlock func()
}

func (s *startLocked) Stop(ctx context.Context, names []string) error {
	unlock := testenv.StartLock(s.t)
	s.mu.Lock()
	s.unlock = unlock
	s.mu.Unlock()
	return s.Services.Stop(ctx, names)
}

func (s *startLocked) Start(ctx context.Context, cfg stack.Config, names []string) error {
	defer func() {
		s.mu.Lock()
		if s.unlock != nil {
			s.unlock()
			s.unlock = nil
		}
		s.mu.Unlock()
	}()
	return s.Services.Start(ctx, cfg, names)
}

// settle waits until the services run on the topology db.topology names: an exercise's
// reset may have set it back, and the next exercise must start on a lab that has
// finished switching (Current waits for a switch under way).
func settle(t *testing.T, ctx context.Context, dash *dashAPI, sw *topology.Switcher) {
	t.Helper()
	if sw == nil {
		return
	}
	deadline := time.Now().Add(5 * time.Minute)
	for {
		settings, _ := dash.labState(t, ctx)
		want := settings[control.DBTopology]
		got := sw.Current()
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("db.topology is %s, and the services still run on %s", want, got)
		}
		time.Sleep(time.Second)
	}
}
