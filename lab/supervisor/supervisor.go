// Package supervisor runs the lab's processes natively: it starts them, fans their
// output into one stream, restarts them when they crash (as compose's restart policy
// would), kills them on demand for chaos exercises, polls their health and stops them
// all cleanly.
//
// Every process runs in its own process group, so a Ctrl-C in the terminal reaches only
// `lab` (the foreground group), which then stops the children in order with SIGTERM;
// signals from the supervisor go to the whole group, so helpers a process spawned go
// with it.
//
// The supervisor knows nothing about the shop: lab/stack describes the services and
// turns them into Procs.
package supervisor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"slices"
	"sync"
	"syscall"
	"time"
)

// Timings of the restart policy and of stopping.
const (
	minBackoff  = 200 * time.Millisecond // first restart delay after a crash
	maxBackoff  = 10 * time.Second       // the delay doubles up to this
	resetAfter  = 30 * time.Second       // uptime after which a crash counts as the first again
	stopTimeout = 15 * time.Second       // SIGTERM → SIGKILL grace period (Supervisor.stopTimeout)
	drainWait   = 2 * time.Second        // how long to wait for the last output of a dead process
)

// Proc describes one process to run.
type Proc struct {
	Name     string // service name (shared by its instances)
	Instance string // unique id, e.g. "payments-1"; defaults to Name
	Path     string // binary
	Args     []string
	Env      []string // added to os.Environ() (see ExactEnv); a later entry wins over an earlier one
	Dir      string   // working directory; "" = lab's own
	// ExactEnv makes Env the whole environment: nothing is inherited from os.Environ().
	// For a process that must see only what it is given, as a container sees only what
	// compose gives it (compose's parity test): a variable compose forgets must be
	// missing here too, not quietly found in the lab's own environment.
	ExactEnv bool
	// HealthURL answers 200 when the process is ready (the services' /readyz). Empty:
	// the process counts as healthy as soon as it runs.
	HealthURL string
	// NoRestart: when the process exits, leave it dead (default: restart with backoff).
	NoRestart bool
	// LogFile, when set, receives the process's output (appended, unprefixed) instead of
	// the supervisor's shared stream: for chatty infrastructure (Jaeger, Prometheus)
	// whose lines would bury the services' own. The last lines are still kept for
	// WaitHealthy's errors and Tail.
	LogFile string
}

func (p Proc) id() string {
	if p.Instance != "" {
		return p.Instance
	}
	return p.Name
}

// Supervisor owns a set of running processes. Its methods are safe for concurrent use.
type Supervisor struct {
	log *slog.Logger
	out *output
	// stopTimeout is the SIGTERM → SIGKILL grace of Stop, Restart and StopAll: the
	// stopTimeout constant, which the package's tests lengthen so that only their own
	// context decides when a process that ignores SIGTERM is killed.
	stopTimeout time.Duration

	mu     sync.Mutex
	procs  map[string]*proc // by instance id
	order  []string         // instance ids in start order
	colour int              // next colour index
}

// New returns a supervisor that logs its own decisions (starts, exits, restarts) to log
// and writes every process's output lines, prefixed with the instance id, to out.
// Prefixes are coloured only when out is a terminal and NO_COLOR is unset.
func New(log *slog.Logger, out io.Writer) *Supervisor {
	return &Supervisor{log: log, out: newOutput(out), procs: map[string]*proc{}, stopTimeout: stopTimeout}
}

// proc is one supervised instance: the Proc and the process currently running it. Its
// supervise goroutine lives from Start until the instance is stopped (or, with
// NoRestart, until it exits), restarting the process in between.
type proc struct {
	spec   Proc
	colour int
	tail   *ring // survives restarts: the lines before a crash explain it

	stopCh chan struct{} // closed when a stop is requested
	done   chan struct{} // closed when supervise returns: nothing runs, nothing will
	log    *os.File      // spec.LogFile, open from launch until supervise returns; nil: shared output

	mu       sync.Mutex
	pid      int // 0 while no process runs (between restarts, after the end)
	started  time.Time
	stopping bool
	exits    int    // how many times a process of this instance ended
	lastExit string // how the last one ended ("exit status 1", "signal: killed")
}

// Start runs p and supervises it until Stop, StopAll or (with NoRestart) its exit. It
// returns once the process is started (not ready: see WaitHealthy). ctx bounds only the
// start, not the process's life. Starting an instance id that is already supervised is
// an error.
func (s *Supervisor) Start(ctx context.Context, p Proc) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("start %s: %w", p.id(), err)
	}
	if p.Path == "" {
		return fmt.Errorf("start %s: no binary", p.id())
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	id := p.id()
	if _, ok := s.procs[id]; ok {
		return fmt.Errorf("start %s: already running", id)
	}
	pr := &proc{spec: p, colour: s.colour, tail: &ring{}}
	if err := s.launch(pr); err != nil {
		return err
	}
	s.colour++
	s.procs[id] = pr
	s.order = append(s.order, id)
	return nil
}

// launch starts pr's first process and its supervise goroutine.
func (s *Supervisor) launch(pr *proc) error {
	pr.stopCh = make(chan struct{})
	pr.done = make(chan struct{})
	if pr.spec.LogFile != "" {
		f, err := os.OpenFile(pr.spec.LogFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return fmt.Errorf("start %s: log file: %w", pr.spec.id(), err)
		}
		pr.log = f
	} else {
		s.out.register(pr.spec.id())
	}
	cmd, drained, err := s.spawn(pr)
	if err != nil {
		if pr.log != nil {
			_ = pr.log.Close()
		}
		return err
	}
	s.log.Info("started", "instance", pr.spec.id(), "pid", cmd.Process.Pid)
	go s.supervise(pr, cmd, drained)
	return nil
}

var errStopping = errors.New("stopping")

// spawn starts one process for pr. Output goes through a pipe we own (not exec's copying
// goroutine), so Wait returns when the process exits even if something it left behind
// still holds the pipe; the pump goroutine ends when every writer is gone and closes
// drained.
func (s *Supervisor) spawn(pr *proc) (*exec.Cmd, <-chan struct{}, error) {
	pr.mu.Lock()
	defer pr.mu.Unlock()
	// Checked under the same lock Stop takes: once a stop is requested, nothing new starts.
	if pr.stopping {
		return nil, nil, errStopping
	}
	id := pr.spec.id()
	r, w, err := os.Pipe()
	if err != nil {
		return nil, nil, fmt.Errorf("start %s: %w", id, err)
	}
	cmd := exec.Command(pr.spec.Path, pr.spec.Args...)
	if pr.spec.ExactEnv {
		// Never nil: exec gives a nil Env the whole of os.Environ().
		cmd.Env = append([]string{}, pr.spec.Env...)
	} else {
		cmd.Env = append(os.Environ(), pr.spec.Env...)
	}
	cmd.Dir = pr.spec.Dir
	cmd.Stdout, cmd.Stderr = w, w
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		_ = r.Close()
		_ = w.Close()
		return nil, nil, fmt.Errorf("start %s: %w", id, err)
	}
	_ = w.Close() // the child has its copy; EOF comes when it (and its children) are gone
	pr.pid = cmd.Process.Pid
	pr.started = time.Now()
	drained := make(chan struct{})
	var file io.Writer // nil interface (not a nil *os.File) when there is no log file
	if pr.log != nil {
		file = pr.log
	}
	go func() {
		defer close(drained)
		defer r.Close()
		s.out.pump(r, id, pr.colour, pr.tail, file)
	}()
	return cmd, drained, nil
}

// supervise waits for the process to end and, unless it was asked to stop (or must not
// restart), starts it again after a backoff.
func (s *Supervisor) supervise(pr *proc, cmd *exec.Cmd, drained <-chan struct{}) {
	defer close(pr.done)
	if pr.log != nil {
		defer pr.log.Close() // runs before done is closed: a stopped proc holds no file
	}
	id := pr.spec.id()
	backoff := minBackoff
	for {
		werr := cmd.Wait()
		pr.mu.Lock()
		pr.pid = 0 // reaped: Kill and Stop have nothing to signal any more
		pr.mu.Unlock()
		// Whatever the process left behind in its group dies with it: an orphan could
		// hold the port the next instance needs. (The kernel does not reuse a group id
		// while the group has members, so this reaches only leftovers, if any.)
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		select {
		case <-drained:
		case <-time.After(drainWait):
		}
		how := "exit status 0"
		if werr != nil {
			how = werr.Error()
		}
		pr.mu.Lock()
		uptime := time.Since(pr.started)
		pr.exits++
		pr.lastExit = how
		stopping, exits := pr.stopping, pr.exits
		pr.mu.Unlock()

		switch {
		case stopping:
			s.log.Info("stopped", "instance", id, "exit", how)
			return
		case pr.spec.NoRestart:
			s.log.Warn("exited, not restarting (NoRestart)", "instance", id, "exit", how, "uptime", uptime.Round(time.Millisecond))
			return
		}
		if uptime >= resetAfter {
			backoff = minBackoff // it ran fine for a while: this is a new crash, not a loop
		}
		s.log.Warn("crashed, restarting", "instance", id, "exit", how,
			"uptime", uptime.Round(time.Millisecond), "restart_in", backoff, "restarts", exits)
		for {
			select {
			case <-pr.stopCh:
				s.log.Info("stopped", "instance", id, "exit", how)
				return
			case <-time.After(backoff):
			}
			backoff = min(backoff*2, maxBackoff)
			var err error
			cmd, drained, err = s.spawn(pr)
			if errors.Is(err, errStopping) {
				s.log.Info("stopped", "instance", id, "exit", how)
				return
			}
			if err == nil {
				s.log.Info("restarted", "instance", id, "pid", cmd.Process.Pid)
				break
			}
			s.log.Error("restart failed", "instance", id, "err", err, "retry_in", backoff)
		}
	}
}

// signal sends sig to pr's process group, if a process runs.
func (pr *proc) signal(sig syscall.Signal) error {
	pr.mu.Lock()
	defer pr.mu.Unlock()
	if pr.pid == 0 {
		return fmt.Errorf("%s is not running", pr.spec.id())
	}
	if err := syscall.Kill(-pr.pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("signal %s: %w", pr.spec.id(), err)
	}
	return nil
}

// requestStop marks pr as stopping (no more restarts) and sends SIGTERM if it runs. Only
// the first request signals: a second SIGTERM may cut a graceful shutdown short.
func (pr *proc) requestStop() {
	pr.mu.Lock()
	defer pr.mu.Unlock()
	if pr.stopping {
		return
	}
	pr.stopping = true
	close(pr.stopCh)
	if pr.pid != 0 {
		_ = syscall.Kill(-pr.pid, syscall.SIGTERM)
	}
}

// stop asks pr to stop and waits until it has; after grace (or when ctx ends) it sends
// SIGKILL. It reports whether SIGKILL was needed.
func (pr *proc) stop(ctx context.Context, grace time.Duration) (killed bool) {
	pr.requestStop()
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-pr.done:
		return false
	case <-t.C:
	case <-ctx.Done():
	}
	// A process that exited just as the grace ran out was not killed: select picks at
	// random among ready cases, so look at done once more before saying otherwise.
	select {
	case <-pr.done:
		return false
	default:
	}
	_ = pr.signal(syscall.SIGKILL)
	<-pr.done
	return true
}

// match returns the instances name refers to: the instance with that id, or else every
// instance of the service called name.
func (s *Supervisor) match(name string) ([]*proc, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if p, ok := s.procs[name]; ok {
		return []*proc{p}, nil
	}
	var out []*proc
	for _, id := range s.order {
		if p := s.procs[id]; p.spec.Name == name {
			out = append(out, p)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no process %q", name)
	}
	return out, nil
}

// Stop stops name (an instance id, or every instance of a service) for good: SIGTERM,
// then SIGKILL if it is still running after 15s. It returns when the processes are gone.
func (s *Supervisor) Stop(name string) error {
	ps, err := s.match(name)
	if err != nil {
		return fmt.Errorf("stop: %w", err)
	}
	s.forget(ps)
	var killed []string
	for _, p := range ps {
		if p.stop(context.Background(), s.stopTimeout) {
			killed = append(killed, p.spec.id())
		}
	}
	if len(killed) > 0 {
		return fmt.Errorf("stop: %v ignored SIGTERM for %s and were killed", killed, s.stopTimeout)
	}
	return nil
}

// forget removes ps from the registry, so nothing (Restart, StopAll) touches them again.
func (s *Supervisor) forget(ps []*proc) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range ps {
		id := p.spec.id()
		if s.procs[id] == p {
			delete(s.procs, id)
			s.order = slices.DeleteFunc(s.order, func(o string) bool { return o == id })
		}
	}
}

// Kill simulates a crash of name (an instance id, or every instance of a service):
// SIGKILL to its process group, like `kill -9`. The normal crash handling follows: the
// process is restarted after the backoff (unless NoRestart). It returns once the signal
// is sent; an instance that is between restarts is not running and Kill fails.
func (s *Supervisor) Kill(name string) error {
	ps, err := s.match(name)
	if err != nil {
		return fmt.Errorf("kill: %w", err)
	}
	var errs []error
	for _, p := range ps {
		if err := p.signal(syscall.SIGKILL); err != nil {
			errs = append(errs, err)
		} else {
			s.log.Warn("killed (SIGKILL)", "instance", p.spec.id())
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("kill: %w", err)
	}
	return nil
}

// Restart stops name (an instance id, or every instance of a service) like Stop and
// starts it again at once, with no backoff. The restarted instance keeps its place in
// the stop order, its colour and its recent log lines.
func (s *Supervisor) Restart(name string) error {
	ps, err := s.match(name)
	if err != nil {
		return fmt.Errorf("restart: %w", err)
	}
	for _, p := range ps {
		p.stop(context.Background(), s.stopTimeout)
		if err := s.replace(p); err != nil {
			return err
		}
		s.log.Info("restarted on request", "instance", p.spec.id())
	}
	return nil
}

// replace starts a fresh proc in old's place, unless old was stopped meanwhile.
func (s *Supervisor) replace(old *proc) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	id := old.spec.id()
	if s.procs[id] != old {
		return fmt.Errorf("restart %s: stopped meanwhile", id)
	}
	np := &proc{spec: old.spec, colour: old.colour, tail: old.tail}
	if err := s.launch(np); err != nil {
		delete(s.procs, id)
		s.order = slices.DeleteFunc(s.order, func(o string) bool { return o == id })
		return fmt.Errorf("restart: %w", err)
	}
	s.procs[id] = np
	return nil
}

// PID returns the process id running name (an instance id, or the first instance of a
// service), or 0 if none runs at the moment (unknown, or between restarts).
func (s *Supervisor) PID(name string) int {
	ps, err := s.match(name)
	if err != nil {
		return 0
	}
	p := ps[0]
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.pid
}

// Tail returns the last lines (at most 50) name printed, oldest first; for a service
// name, those of its first instance.
func (s *Supervisor) Tail(name string) []string {
	ps, err := s.match(name)
	if err != nil {
		return nil
	}
	return ps[0].tail.lines()
}

// StopAll stops every process: SIGTERM to each, in reverse start order (the gateway,
// started last, stops taking requests first), then waits for all of them to exit. Those
// still running after 15s, or when ctx ends if sooner, get SIGKILL. It returns when every
// process is gone; the error names the ones that had to be killed.
func (s *Supervisor) StopAll(ctx context.Context) error {
	s.mu.Lock()
	ps := make([]*proc, 0, len(s.order))
	for _, id := range slices.Backward(s.order) {
		ps = append(ps, s.procs[id])
	}
	s.procs = map[string]*proc{}
	s.order = nil
	s.mu.Unlock()

	for _, p := range ps {
		p.requestStop()
	}
	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		killed []string
	)
	for _, p := range ps {
		wg.Go(func() {
			// The grace period already started when requestStop signalled everyone above.
			if p.stop(ctx, s.stopTimeout) {
				mu.Lock()
				killed = append(killed, p.spec.id())
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(killed) > 0 {
		slices.Sort(killed)
		return fmt.Errorf("stop all: %v did not exit after SIGTERM and were killed", killed)
	}
	return nil
}
