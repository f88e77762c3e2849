package supervisor

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// The processes these tests supervise are this test binary itself, re-executed in a
// helper mode chosen by an environment variable: real processes that crash, serve,
// ignore SIGTERM, on cue.
const helperEnv = "LAB_SUPERVISOR_HELPER"

func TestMain(m *testing.M) {
	if mode := os.Getenv(helperEnv); mode != "" {
		os.Exit(helper(mode))
	}
	os.Exit(m.Run())
}

func helper(mode string) int {
	fmt.Printf("started pid=%d\n", os.Getpid())
	switch mode {
	case "serve": // serve /readyz on HELPER_ADDR until SIGTERM
		ln, err := net.Listen("tcp", os.Getenv("HELPER_ADDR"))
		if err != nil {
			fmt.Println("listen:", err)
			return 1
		}
		term := make(chan os.Signal, 1)
		signal.Notify(term, syscall.SIGTERM)
		go func() { _ = http.Serve(ln, http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})) }()
		<-term
		fmt.Println("got SIGTERM, bye")
		return 0
	case "crash": // exit 3 after HELPER_AFTER
		d, _ := time.ParseDuration(os.Getenv("HELPER_AFTER"))
		time.Sleep(d)
		fmt.Fprintln(os.Stderr, "crashing on purpose")
		return 3
	case "stubborn": // ignore SIGTERM
		signal.Ignore(syscall.SIGTERM)
		fmt.Println("ignoring SIGTERM")
		select {}
	case "lines": // print HELPER_LINES lines, then wait to be stopped
		n, _ := strconv.Atoi(os.Getenv("HELPER_LINES"))
		for i := range n {
			fmt.Printf("line %d\n", i)
		}
		select {}
	case "env": // print the environment, a line a variable, then wait to be stopped
		for _, kv := range os.Environ() {
			fmt.Println("env", kv)
		}
		fmt.Println("env done")
		select {}
	case "never-ready":
		fmt.Println("hello from never-ready")
		select {}
	}
	fmt.Println("unknown helper mode", mode)
	return 2
}

// syncBuffer is an io.Writer safe for the supervisor's concurrent writers.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

type fixture struct {
	sup  *Supervisor
	out  *syncBuffer // the processes' output
	logs *syncBuffer // the supervisor's own log
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{out: &syncBuffer{}, logs: &syncBuffer{}}
	f.sup = New(slog.New(slog.NewTextHandler(f.logs, nil)), f.out)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = f.sup.StopAll(ctx)
		if t.Failed() {
			t.Logf("output:\n%s\nsupervisor log:\n%s", f.out, f.logs)
		}
	})
	return f
}

// count is how many output lines of instance contain s.
func (f *fixture) count(instance, s string) int {
	n := 0
	for l := range strings.Lines(f.out.String()) {
		if strings.HasPrefix(l, instance+" ") && strings.Contains(l, s) {
			n++
		}
	}
	return n
}

func helperProc(t *testing.T, name, instance, mode string, env ...string) Proc {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	// Under -race the helper would otherwise sleep 1s at exit (the race runtime's default).
	env = append([]string{helperEnv + "=" + mode, "GORACE=atexit_sleep_ms=0"}, env...)
	return Proc{Name: name, Instance: instance, Path: exe, Env: env}
}

// serving returns a helper that serves /readyz on a free port.
func serving(t *testing.T, name, instance string) Proc {
	t.Helper()
	addr := freeAddr(t)
	p := helperProc(t, name, instance, "serve", "HELPER_ADDR="+addr)
	p.HealthURL = "http://" + addr + "/readyz"
	return p
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// patience bounds every wait for something that must happen. It only costs time when
// the test fails anyway, so it is long enough for a loaded machine running -race.
const patience = time.Minute

func eventually(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %s", within, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// alive reports whether pid is a live process. A zombie counts as dead: in a container
// whose PID 1 does not reap orphans, a killed grandchild stays a zombie forever.
func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return syscall.Kill(pid, 0) == nil && !os.IsNotExist(err)
	}
	// The state follows the command name in parentheses: "pid (comm) S ...".
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}

func ctxFor(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func TestCrashIsRestartedWithBackoff(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	start := time.Now()
	if err := f.sup.Start(t.Context(), helperProc(t, "crasher", "", "crash", "HELPER_AFTER=20ms")); err != nil {
		t.Fatal(err)
	}
	eventually(t, patience, "three starts", func() bool { return f.count("crasher", "started pid=") >= 3 })
	// Two restarts waited 200ms then 400ms: the supervisor backs off, it does not spin.
	// (A lower bound: a slow machine only makes it longer.)
	if took := time.Since(start); took < 600*time.Millisecond {
		t.Fatalf("three starts within %s: no backoff", took)
	}
	logs := f.logs.String()
	for _, want := range []string{"restart_in=200ms", "restart_in=400ms", `exit="exit status 3"`} {
		if !strings.Contains(logs, want) {
			t.Errorf("supervisor log lacks %q", want)
		}
	}
	if n := strings.Count(logs, "crashed, restarting"); n < 2 {
		t.Errorf("%d restart lines, want one per restart", n)
	}
	// A dead process's last lines may trail its restart (the supervisor waits for them
	// only so long).
	eventually(t, patience, "stderr of the process in the output", func() bool { return f.count("crasher", "crashing on purpose") >= 2 })
}

func TestKillIsACrashAndRestarts(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	if err := f.sup.Start(t.Context(), serving(t, "web", "web-1")); err != nil {
		t.Fatal(err)
	}
	if err := f.sup.WaitHealthy(ctxFor(t, patience)); err != nil {
		t.Fatal(err)
	}
	old := f.sup.PID("web") // by service name
	if old == 0 || old != f.sup.PID("web-1") {
		t.Fatalf("PID by service %d, by instance %d", old, f.sup.PID("web-1"))
	}
	if err := f.sup.Kill("web"); err != nil {
		t.Fatal(err)
	}
	eventually(t, patience, "a new process", func() bool {
		p := f.sup.PID("web-1")
		return p != 0 && p != old
	})
	if err := f.sup.WaitHealthy(ctxFor(t, patience), "web-1"); err != nil {
		t.Fatal(err)
	}
	if alive(old) {
		t.Errorf("killed process %d still alive", old)
	}
	if !strings.Contains(f.logs.String(), `exit="signal: killed"`) {
		t.Error("the restart line does not say the process was killed")
	}
	if f.count("web-1", "got SIGTERM") != 0 {
		t.Error("kill -9 must not be a graceful stop")
	}
}

// StopAll signals everyone, waits for those that honour SIGTERM, and kills the one that
// does not when its context ends. The grace is an hour here, so it is the test's cancel,
// made once everything else has gone, that ends the wait: no race against a deadline.
func TestStopAllStopsEverything(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.sup.stopTimeout = time.Hour
	ctx := t.Context()
	procs := []Proc{
		serving(t, "web", "web-1"),
		// A process with a child in its group: both must go.
		{Name: "shell", Path: "/bin/sh", Args: []string{"-c", "sleep 300 & echo child=$!; wait"}},
		// Crash-looping: often between restarts when StopAll comes.
		helperProc(t, "crasher", "", "crash", "HELPER_AFTER=10ms"),
		helperProc(t, "stubborn", "", "stubborn"),
	}
	for _, p := range procs {
		if err := f.sup.Start(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.sup.WaitHealthy(ctxFor(t, patience), "web"); err != nil {
		t.Fatal(err)
	}
	var child int
	eventually(t, patience, "the shell's child pid", func() bool {
		m := regexp.MustCompile(`child=(\d+)`).FindStringSubmatch(f.out.String())
		if m != nil {
			child, _ = strconv.Atoi(m[1])
		}
		return child != 0
	})
	eventually(t, patience, "stubborn ignores SIGTERM", func() bool { return f.count("stubborn", "ignoring SIGTERM") > 0 })
	stubborn := f.sup.PID("stubborn")
	pids := []int{child, f.sup.PID("web"), f.sup.PID("shell"), stubborn}
	for _, p := range pids {
		if p == 0 || !alive(p) {
			t.Fatalf("pids %v: not all running", pids)
		}
	}

	f.sup.mu.Lock()
	supervised := maps.Clone(f.sup.procs) // StopAll forgets them
	f.sup.mu.Unlock()
	stopCtx := &watchedCtx{}
	stopCtx.Context, stopCtx.cancel = context.WithCancel(context.Background())
	defer stopCtx.cancel()
	stopped := make(chan error, 1)
	go func() { stopped <- f.sup.StopAll(stopCtx) }()
	// StopAll waits for each process (one wait each, which asks for the context's Done
	// as it starts)...
	eventually(t, patience, "StopAll waiting for each process", func() bool { return stopCtx.waits.Load() == int32(len(procs)) })
	// ...and everything that honours SIGTERM goes, ending its supervision; the
	// crasher's restart loop ends too.
	for _, id := range []string{"web-1", "shell", "crasher"} {
		select {
		case <-supervised[id].done:
		case <-time.After(patience):
			t.Fatalf("%s still supervised %s after SIGTERM (pids %v)", id, patience, pids)
		}
	}
	// The stubborn one is still there, and StopAll waits for it: its grace lasts an hour.
	if !alive(stubborn) {
		t.Fatalf("stubborn (pid %d) died before StopAll's context ended", stubborn)
	}
	select {
	case err := <-stopped:
		t.Fatalf("StopAll returned (%v) while stubborn still ran", err)
	default:
	}
	eventually(t, patience, "web stopped with SIGTERM", func() bool { return f.count("web-1", "got SIGTERM") == 1 })

	stopCtx.cancel() // the context ends: now StopAll kills it
	var err error
	select {
	case err = <-stopped:
	case <-time.After(patience):
		t.Fatalf("StopAll still waiting %s after its context ended", patience)
	}
	if err == nil || !strings.Contains(err.Error(), "stubborn") || strings.Contains(err.Error(), "web") {
		t.Errorf("StopAll error = %v, want one naming only stubborn as killed", err)
	}
	// The processes StopAll waited for are reaped; the shell's child, signalled with its
	// group, dies in its own time.
	for _, p := range pids {
		eventually(t, patience, fmt.Sprintf("pid %d gone after StopAll (pids %v)", p, pids), func() bool { return !alive(p) })
	}
	// Every supervising goroutine has returned (StopAll waits for them), the crasher's
	// included, so nothing can be restarted any more.
	starts := f.count("crasher", "started pid=")
	for _, name := range []string{"web", "shell", "crasher", "stubborn"} {
		if id := map[string]string{"web": "web-1"}[name]; !strings.Contains(f.logs.String(), "msg=stopped instance="+cmp.Or(id, name)+" ") {
			t.Errorf("no %q line for %s: its supervision did not end", "stopped", name)
		}
		if pid := f.sup.PID(name); pid != 0 {
			t.Errorf("PID(%s) = %d after StopAll", name, pid)
		}
	}
	if n := f.count("crasher", "started pid="); n != starts {
		t.Errorf("crasher restarted after StopAll (%d → %d starts)", starts, n)
	}
}

// watchedCtx is a context that counts the calls of Done: a wait on it asks for Done as
// it starts, so the test knows when every wait has begun.
type watchedCtx struct {
	context.Context
	cancel context.CancelFunc
	waits  atomic.Int32
}

func (c *watchedCtx) Done() <-chan struct{} {
	c.waits.Add(1)
	return c.Context.Done()
}

func TestWaitHealthyTimesOutWithAClearError(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	p := helperProc(t, "never", "never-1", "never-ready")
	p.HealthURL = "http://" + freeAddr(t) + "/readyz" // nothing listens there
	if err := f.sup.Start(t.Context(), p); err != nil {
		t.Fatal(err)
	}
	if err := f.sup.Start(t.Context(), serving(t, "web", "web-1")); err != nil {
		t.Fatal(err)
	}
	// Both processes are up first, so that the short deadline below is about never-1
	// only: web-1 answers, and never-1 has printed the line its error must quote.
	if err := f.sup.WaitHealthy(ctxFor(t, patience), "web-1"); err != nil {
		t.Fatal(err)
	}
	eventually(t, patience, "never-1's first line", func() bool { return f.count("never-1", "hello from never-ready") > 0 })

	// The deadline is the test's: WaitHealthy gives up when it comes, with the last
	// failure of each process. That failure is a probe's, if one finished in time; on a
	// machine too busy to finish one within the deadline, the error can only say the
	// deadline cut the probe short, and the test asks again with twice the time.
	var err error
	for within := time.Second; ; within *= 2 {
		err = waitHealthyWithin(t, f.sup, within)
		if err == nil || !strings.Contains(err.Error(), context.DeadlineExceeded.Error()) || within >= patience {
			break
		}
		t.Logf("a probe did not finish within %s; again with twice the time:\n%v", within, err)
	}
	if err == nil {
		t.Fatal("WaitHealthy succeeded with a process that never gets ready")
	}
	msg := err.Error()
	for _, want := range []string{"never-1 not healthy", "connection refused", "hello from never-ready"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error lacks %q:\n%s", want, msg)
		}
	}
	if strings.Contains(msg, "web-1") {
		t.Errorf("error blames the healthy web-1:\n%s", msg)
	}
	if err := f.sup.WaitHealthy(ctxFor(t, patience), "nosuch"); err == nil || !strings.Contains(err.Error(), `no process "nosuch"`) {
		t.Errorf("unknown name: %v", err)
	}
}

// waitHealthyWithin calls WaitHealthy (every process) with a deadline of within, and
// fails the test if it does not return once the deadline has passed.
func waitHealthyWithin(t *testing.T, sup *Supervisor, within time.Duration) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- sup.WaitHealthy(ctx) }()
	select {
	case err := <-done:
		return err
	case <-time.After(within + patience):
		t.Fatalf("WaitHealthy still waiting %s past its %s deadline", patience, within)
		return nil
	}
}

func TestNoRestartLeavesItDead(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	p := helperProc(t, "once", "", "crash", "HELPER_AFTER=10ms")
	p.NoRestart = true
	p.HealthURL = "http://" + freeAddr(t) + "/readyz"
	if err := f.sup.Start(t.Context(), p); err != nil {
		t.Fatal(err)
	}
	// The context lasts an hour: WaitHealthy must fail as soon as the process has exited,
	// not when its context ends.
	ctx := ctxFor(t, time.Hour)
	done := make(chan error, 1)
	go func() { done <- f.sup.WaitHealthy(ctx) }()
	var err error
	select {
	case err = <-done:
	case <-time.After(patience):
		t.Fatalf("WaitHealthy still waiting %s after the start of a NoRestart process that exits at once", patience)
	}
	if err == nil || !strings.Contains(err.Error(), "exit status 3") || !strings.Contains(err.Error(), "not restarted") {
		t.Fatalf("WaitHealthy = %v, want a failure saying it exited", err)
	}
	// Its supervision ends with the exit, so nothing can start it again.
	eventually(t, patience, "the end of its supervision", func() bool {
		return strings.Contains(f.logs.String(), "exited, not restarting (NoRestart)")
	})
	eventually(t, patience, "its one start line", func() bool { return f.count("once", "started pid=") > 0 })
	if n := f.count("once", "started pid="); n != 1 {
		t.Errorf("started %d times, want 1", n)
	}
	if f.sup.PID("once") != 0 {
		t.Error("PID of an exited process is not 0")
	}
}

func TestRestartAndStop(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	p := serving(t, "web", "web-1")
	if err := f.sup.Start(t.Context(), p); err != nil {
		t.Fatal(err)
	}
	if err := f.sup.Start(t.Context(), p); err == nil {
		t.Error("starting a running instance twice succeeded")
	}
	if err := f.sup.WaitHealthy(ctxFor(t, patience)); err != nil {
		t.Fatal(err)
	}
	old := f.sup.PID("web-1")
	if err := f.sup.Restart("web-1"); err != nil {
		t.Fatal(err)
	}
	if pid := f.sup.PID("web-1"); pid == 0 || pid == old || alive(old) {
		t.Fatalf("after Restart: pid %d (old %d, alive %v)", pid, old, alive(old))
	}
	if err := f.sup.WaitHealthy(ctxFor(t, patience)); err != nil {
		t.Fatal(err)
	}
	// Output is copied by a goroutine of its own, which may trail the process.
	eventually(t, patience, "the old process's SIGTERM line: Restart stops it gracefully", func() bool {
		return f.count("web-1", "got SIGTERM") == 1
	})
	// The tail spans both runs.
	eventually(t, patience, "two start lines in the tail", func() bool {
		return strings.Count(strings.Join(f.sup.Tail("web-1"), "\n"), "started pid=") == 2
	})

	cur := f.sup.PID("web-1")
	if err := f.sup.Stop("web"); err != nil {
		t.Fatal(err)
	}
	if alive(cur) || f.sup.PID("web-1") != 0 {
		t.Fatal("Stop left the process running")
	}
	if err := f.sup.Kill("web-1"); err == nil {
		t.Error("Kill of a stopped instance succeeded")
	}
	// A stopped instance is forgotten: its id can be started again.
	if err := f.sup.Start(t.Context(), p); err != nil {
		t.Fatal(err)
	}
	if err := f.sup.WaitHealthy(ctxFor(t, patience), "web-1"); err != nil {
		t.Fatal(err)
	}
}

func TestOutputIsPrefixedAndTailed(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	if err := f.sup.Start(t.Context(), helperProc(t, "a-much-longer-name", "", "never-ready")); err != nil {
		t.Fatal(err)
	}
	if err := f.sup.Start(t.Context(), helperProc(t, "lines", "lines-1", "lines", "HELPER_LINES=120")); err != nil {
		t.Fatal(err)
	}
	eventually(t, patience, "all lines", func() bool { return f.count("lines-1", "line 119") == 1 })
	out := f.out.String()
	if strings.Contains(out, "\x1b[") {
		t.Error("colour codes written to a non-terminal")
	}
	pad := strings.Repeat(" ", len("a-much-longer-name")-len("lines-1"))
	if !strings.Contains(out, "lines-1"+pad+" | line 0\n") {
		t.Errorf("lines not prefixed with the padded instance id:\n%s", out)
	}
	tail := f.sup.Tail("lines")
	if len(tail) != tailLines || tail[0] != "line 70" || tail[len(tail)-1] != "line 119" {
		t.Errorf("tail = %d lines from %q to %q, want line 70..line 119", len(tail), tail[0], tail[len(tail)-1])
	}
}

func TestPumpCutsOverlongLines(t *testing.T) {
	t.Parallel()
	var buf syncBuffer
	o := newOutput(&buf)
	o.register("x")
	r := &ring{}
	long := strings.Repeat("a", maxLine+10)
	o.pump(strings.NewReader("first\r\n"+long+"\nlast"), "x", 0, r, nil)
	got := r.lines()
	if len(got) != 3 || got[0] != "first" || !strings.HasSuffix(got[1], "…[cut]") || got[2] != "last" {
		t.Errorf("lines = %q", fmt.Sprint(len(got), " ", got[0], " ", got[len(got)-1]))
	}
}

// A process with a LogFile writes there, across restarts, and nothing to the shared
// output; its tail is kept all the same.
func TestLogFileTakesTheOutput(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	log := filepath.Join(t.TempDir(), "crasher.log")
	p := helperProc(t, "crasher", "", "crash", "HELPER_AFTER=10ms")
	p.LogFile = log
	if err := f.sup.Start(t.Context(), p); err != nil {
		t.Fatal(err)
	}
	eventually(t, patience, "two runs in the log file", func() bool {
		b, _ := os.ReadFile(log)
		return strings.Count(string(b), "crashing on purpose\n") >= 2
	})
	if out := f.out.String(); out != "" {
		t.Errorf("shared output got lines of a LogFile process:\n%s", out)
	}
	if tail := f.sup.Tail("crasher"); !slices.Contains(tail, "crashing on purpose") {
		t.Errorf("tail %q", tail)
	}
	if err := f.sup.Stop("crasher"); err != nil {
		t.Fatal(err)
	}
}

// ExactEnv: the process sees its Env and nothing else; without it, Env comes on top of
// the supervisor's own environment.
func TestExactEnv(t *testing.T) {
	t.Parallel()
	if os.Getenv("PATH") == "" {
		t.Skip("no PATH in this environment to tell inherited from given")
	}
	f := newFixture(t)
	exact := helperProc(t, "exact", "", "env", "ONLY=this")
	exact.ExactEnv = true
	inherit := helperProc(t, "inherit", "", "env", "ONLY=this")
	for _, p := range []Proc{exact, inherit} {
		if err := f.sup.Start(t.Context(), p); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, patience, "both environments printed", func() bool {
		return f.count("exact", "env done") == 1 && f.count("inherit", "env done") == 1
	})
	seen := func(instance string) []string {
		var out []string // from the whole output: Tail keeps only the last lines
		for l := range strings.Lines(f.out.String()) {
			id, text, _ := strings.Cut(strings.TrimSuffix(l, "\n"), " | ")
			if kv, ok := strings.CutPrefix(text, "env "); ok && strings.TrimSpace(id) == instance && kv != "done" {
				out = append(out, kv)
			}
		}
		slices.Sort(out)
		return out
	}
	want := append([]string{}, exact.Env...)
	slices.Sort(want)
	if got := seen("exact"); !slices.Equal(got, want) {
		t.Errorf("ExactEnv: the process saw %q, want exactly %q", got, want)
	}
	got := seen("inherit")
	if !slices.Contains(got, "ONLY=this") || !slices.Contains(got, "PATH="+os.Getenv("PATH")) {
		t.Errorf("without ExactEnv: the process saw %q, want ONLY=this on top of the supervisor's PATH", got)
	}
}
