package testenv

import (
	"context"
	"encoding/json"
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

// AnyAddr is the HTTP_ADDR of a service under test: it binds a port of its own choosing,
// and Start and Exec read the address from its "http listening" log line (and write it
// into the env). A port picked beforehand (FreePort) is free only for a moment: on a
// busy machine full of tests picking ports the same way, another test's service can bind
// it first, and then answers /readyz in place of the one under test.
const AnyAddr = "127.0.0.1:0"

// startOnce runs the service and waits until it is ready. On failure the service has
// stopped (run has returned) before startOnce returns.
func startOnce(t testing.TB, run RunFunc, env Env, logs io.Writer) (string, func(), error) {
	ctx, cancel := context.WithCancel(context.Background())
	// done delivers run's result, then is closed: awaitReady may take the result, and
	// stop must not wait for a second one.
	done := make(chan error, 1)
	seen := &LogBuffer{}
	go func() {
		done <- run(ctx, env.Get, io.MultiWriter(logs, seen))
		close(done)
	}()
	fail := func(err error) (string, func(), error) {
		cancel()
		<-done // the result, or the close after a wait took it
		return "", nil, err
	}
	addr, err := awaitListening(seen, done, ReadyWithin)
	if err != nil {
		return fail(err)
	}
	env["HTTP_ADDR"] = addr
	base := "http://" + addr
	if err := awaitReady(base, done, ReadyWithin); err != nil {
		return fail(err)
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

// awaitListening waits until a service's output holds its "http listening" line (every
// service logs one, with the address, once its listener is bound) and returns the
// address; it fails when the service stops first (done) or within has passed.
func awaitListening(out *LogBuffer, done <-chan error, within time.Duration) (string, error) {
	deadline := time.Now().Add(within)
	for {
		for _, line := range strings.Split(out.String(), "\n") {
			var l struct{ Msg, Addr string }
			if json.Unmarshal([]byte(line), &l) == nil && l.Msg == "http listening" && l.Addr != "" {
				return l.Addr, nil
			}
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("no \"http listening\" line within %s", within)
		}
		select {
		case err := <-done:
			return "", stopped(err)
		case <-time.After(20 * time.Millisecond):
		}
	}
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
