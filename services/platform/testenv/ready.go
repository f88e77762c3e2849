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

// How Start and WaitReady wait for a service to become ready, patient with a busy
// machine (see Start).

// ReadyWithin is how long Start and WaitReady wait for one start attempt to become ready.
const ReadyWithin = 2 * time.Minute

// startAttempts bounds how often Start starts a service whose start failed in a
// way a busy machine causes.
const startAttempts = 3

// startOnce runs the service and waits until it is ready. On failure the service has
// stopped (run has returned) before startOnce returns.
func startOnce(t testing.TB, run RunFunc, env Env, logs io.Writer) (string, func(), error) {
	ctx, cancel := context.WithCancel(context.Background())
	// done delivers run's result, then is closed: awaitReady may take the result, and
	// stop must not wait for a second one.
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
