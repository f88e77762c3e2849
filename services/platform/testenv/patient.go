package testenv

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// On a loaded machine (two cores, several -race test binaries and a lab or two beside
// them) a service's start can take far longer than on an idle one, and a port FreePort
// chose can be taken by another process before the service binds it. Neither says
// anything about the service, and both are cured by starting it again.

// ReadyWithin is how long RunPatiently waits for one start attempt to become ready.
const ReadyWithin = 2 * time.Minute

// startAttempts bounds how often RunPatiently starts a service whose start failed in a
// way a busy machine causes.
const startAttempts = 3

// RunPatiently is Run for a machine that may be busy: it waits up to ReadyWithin for
// readiness, and starts the service again when an attempt failed because its start
// deadline (START_TIMEOUT) passed or its port was taken meanwhile; a retry gets a fresh
// port, written into env["HTTP_ADDR"]. Every attempt starts from scratch against the same
// databases and vhost, which a service's start is built to survive (migrations, topology
// and seeding are idempotent). Any other failure fails the test at once, as with Run.
func RunPatiently(t testing.TB, run RunFunc, env Env, logs io.Writer) string {
	t.Helper()
	base, _ := StartPatiently(t, run, env, logs)
	return base
}

// StartPatiently is Start with RunPatiently's patience: stop stops the service as by
// SIGTERM and waits until run has returned, failing the test on a run error; the test's
// end calls it too.
func StartPatiently(t testing.TB, run RunFunc, env Env, logs io.Writer) (base string, stop func()) {
	t.Helper()
	if logs == nil {
		logs = io.Discard
	}
	for attempt := 1; ; attempt++ {
		began := time.Now()
		base, stop, err := startOnce(t, run, env, logs)
		if err == nil {
			if took := time.Since(began); took > 10*time.Second {
				t.Logf("%s took %s to become ready (attempt %d)", base, took.Round(time.Millisecond), attempt)
			}
			return base, stop
		}
		if attempt == startAttempts || !busyMachine(err) {
			t.Fatalf("start attempt %d of %d: %v", attempt, startAttempts, err)
		}
		t.Logf("start attempt %d failed after %s (%v); starting again on a fresh port", attempt,
			time.Since(began).Round(time.Millisecond), err)
		env["HTTP_ADDR"] = fmt.Sprintf("127.0.0.1:%d", FreePort(t))
	}
}

// startOnce runs the service and waits until it is ready. On failure the service has
// stopped (run has returned) before startOnce returns.
func startOnce(t testing.TB, run RunFunc, env Env, logs io.Writer) (string, func(), error) {
	ctx, cancel := context.WithCancel(context.Background())
	// done delivers run's result, then is closed (as in Start).
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, env.Get, logs)
		close(done)
	}()
	base := "http://" + env["HTTP_ADDR"]
	if err := awaitReady(base, done, ReadyWithin); err != nil {
		cancel()
		<-done // the result, or the close after awaitReady took it
		return "", nil, err
	}
	stop := sync.OnceFunc(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
	})
	t.Cleanup(stop)
	return base, stop, nil
}

// errStopped wraps the error of a service that stopped before it was ready.
var errStopped = errors.New("service stopped before it was ready")

// awaitReady polls base/readyz until it answers 200, the service stops (done delivers
// its result) or within has passed.
func awaitReady(base string, done <-chan error, within time.Duration) error {
	client := &http.Client{Timeout: 10 * time.Second}
	deadline := time.Now().Add(within)
	for {
		resp, err := client.Get(base + "/readyz")
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case err := <-done:
			return stopped(err)
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s never became ready within %s", base, within)
		}
		select {
		case err := <-done:
			return stopped(err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func stopped(err error) error {
	if err == nil {
		return fmt.Errorf("%w (without an error)", errStopped)
	}
	return fmt.Errorf("%w: %w", errStopped, err)
}

// busyMachine reports whether a failed start is one a busy machine causes: the service
// stopped because its start deadline passed, or because its port was taken.
func busyMachine(err error) bool {
	if !errors.Is(err, errStopped) {
		return false
	}
	s := err.Error()
	return errors.Is(err, syscall.EADDRINUSE) || strings.Contains(s, "address already in use") ||
		strings.Contains(s, context.DeadlineExceeded.Error())
}
