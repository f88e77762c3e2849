package testenv

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// built is one Build: its package list is compiled once, by the first test that asks.
type built struct {
	once sync.Once
	dir  string
	err  error
}

// builds is the test binary's cache of Build, by package list. It is process-wide on
// purpose: every test of a package shares one `go build` however many ask (Main removes
// the binaries when they are done).
var builds struct {
	mu   sync.Mutex
	sets map[string]*built
}

// Build compiles the main packages pkgs (paths from the module's root, such as
// "./services/catalog") once per test binary and returns the directory holding their
// executables, each named after its package's directory. Tests asking for the same
// packages, in parallel or later, wait for and share the first build. A package whose
// tests use Build calls Main from TestMain, which removes the binaries at the end.
func Build(t testing.TB, pkgs ...string) string {
	t.Helper()
	key := strings.Join(pkgs, " ")
	builds.mu.Lock()
	if builds.sets == nil {
		builds.sets = map[string]*built{}
	}
	b := builds.sets[key]
	if b == nil {
		b = &built{}
		builds.sets[key] = b
	}
	builds.mu.Unlock()
	b.once.Do(func() { b.dir, b.err = goBuild(pkgs) })
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.dir
}

// Main runs a package's tests and then removes what Build built; its result is the exit
// code: func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }.
func Main(m *testing.M) int {
	code := m.Run()
	builds.mu.Lock()
	defer builds.mu.Unlock()
	for _, b := range builds.sets {
		if b.dir != "" {
			_ = os.RemoveAll(b.dir)
		}
	}
	return code
}

func goBuild(pkgs []string) (string, error) {
	root, err := moduleRoot()
	if err != nil {
		return "", err
	}
	dir, err := os.MkdirTemp("", "microlab-testbin-")
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	// A trailing separator makes -o a directory: one executable per main package.
	args := append([]string{"build", "-o", dir + string(filepath.Separator)}, pkgs...)
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		_ = os.RemoveAll(dir)
		return "", fmt.Errorf("go build %s: %w\n%s", strings.Join(pkgs, " "), err, out)
	}
	return dir, nil
}

// moduleRoot walks up from the working directory (a test's is its package's) to the
// directory holding go.mod.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory")
		}
		dir = parent
	}
}

// Process is a service running as a process of its own (see Exec).
type Process struct {
	URL  string // base URL, such as http://127.0.0.1:40123
	name string
	cmd  *exec.Cmd
	stop func()
}

// Exec runs the executable bin (see Build) as a process with env (and PATH and HOME)
// and its output going to logs (nil: discarded), and waits until /readyz answers 200.
// As with Start, the process listens where env["HTTP_ADDR"] says (AnyAddr: a port of
// its choosing), and the address it listens on is written back into env["HTTP_ADDR"].
// The test's end stops it (see Stop).
func Exec(t testing.TB, bin string, env Env, logs io.Writer) *Process {
	t.Helper()
	if logs == nil {
		logs = io.Discard
	}
	cmd := exec.Command(bin)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	seen := &LogBuffer{}
	cmd.Stdout = io.MultiWriter(logs, seen)
	cmd.Stderr = cmd.Stdout
	p := &Process{name: filepath.Base(bin), cmd: cmd}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", p.name, err)
	}
	// As in Start: the exit is delivered, then done is closed.
	done := make(chan error, 1)
	go func() {
		done <- cmd.Wait()
		close(done)
	}()
	p.stop = sync.OnceFunc(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("%s: %v", p.name, err)
			}
		case <-time.After(time.Minute):
			_ = cmd.Process.Kill()
			<-done
			t.Errorf("%s did not stop on SIGTERM", p.name)
		}
	})
	t.Cleanup(p.stop)
	addr, err := awaitListening(seen, done, ReadyWithin)
	if err != nil {
		t.Fatalf("%s: %v", p.name, err)
	}
	env["HTTP_ADDR"], p.URL = addr, "http://"+addr
	WaitReady(t, p.URL, done)
	return p
}

// Stop sends SIGTERM (SIGKILL if the process has not stopped a minute later) and waits for
// the exit; an exit other than a clean one fails the test, as a run error does with
// Start. Later calls do nothing.
func (p *Process) Stop() { p.stop() }

// Signal sends sig to the process (SIGSTOP freezes it: a hung service whose kernel
// still accepts connections).
func (p *Process) Signal(t testing.TB, sig os.Signal) {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("%s: signal %v: %v", p.name, sig, err)
	}
}
