package supervisor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"
)

const (
	healthPoll    = 100 * time.Millisecond
	healthTimeout = 2 * time.Second // per request: a hung /readyz is not ready
	errorTail     = 20              // log lines quoted in a WaitHealthy error
)

// WaitHealthy waits until every named process (instance ids or service names; none =
// all) answers 200 on its HealthURL, polling until ctx ends. The error names each
// instance that is not healthy, with the last failure, how its process ended if it did,
// and its last log lines. An instance with NoRestart that has exited fails at once.
func (s *Supervisor) WaitHealthy(ctx context.Context, names ...string) error {
	var ids []string
	if len(names) == 0 {
		s.mu.Lock()
		ids = append(ids, s.order...)
		s.mu.Unlock()
	}
	for _, n := range names {
		ps, err := s.match(n)
		if err != nil {
			return fmt.Errorf("wait healthy: %w", err)
		}
		for _, p := range ps {
			ids = append(ids, p.spec.id())
		}
	}
	// No keep-alive: an idle probe connection has no business outliving the wait.
	client := &http.Client{Timeout: healthTimeout, Transport: &http.Transport{DisableKeepAlives: true}}
	start := time.Now()
	errs := make([]error, len(ids))
	var wg sync.WaitGroup
	for i, id := range ids {
		wg.Go(func() { errs[i] = s.waitOne(ctx, client, id, start) })
	}
	wg.Wait()
	return errors.Join(errs...)
}

// waitOne polls one instance. It looks the instance up on every round, so it follows a
// Restart (which replaces the proc).
func (s *Supervisor) waitOne(ctx context.Context, client *http.Client, id string, start time.Time) error {
	var last error
	for {
		s.mu.Lock()
		p := s.procs[id]
		s.mu.Unlock()
		if p == nil {
			return fmt.Errorf("%s not healthy: it was stopped", id)
		}
		p.mu.Lock()
		pid, exits, lastExit := p.pid, p.exits, p.lastExit
		p.mu.Unlock()
		switch {
		case pid == 0 && p.spec.NoRestart && exits > 0:
			return p.unhealthy(fmt.Errorf("exited (%s) and is not restarted", lastExit), time.Since(start))
		case pid == 0:
			last = fmt.Errorf("not running (last exit: %s)", lastExit)
		case p.spec.HealthURL == "":
			return nil
		default:
			err := probe(ctx, client, p.spec.HealthURL)
			if err == nil {
				return nil
			}
			// A probe cut short by ctx says nothing new; keep the failure before it.
			if ctx.Err() == nil || last == nil {
				last = err
			}
		}
		select {
		case <-ctx.Done():
			return p.unhealthy(last, time.Since(start))
		case <-time.After(healthPoll):
		}
	}
}

func probe(ctx context.Context, client *http.Client, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 300))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s: %s", url, resp.Status, strings.TrimSpace(string(body)))
	}
	return nil
}

func (p *proc) unhealthy(last error, after time.Duration) error {
	p.mu.Lock()
	exits := p.exits
	p.mu.Unlock()
	var b strings.Builder
	fmt.Fprintf(&b, "%s not healthy after %s: %v", p.spec.id(), after.Round(100*time.Millisecond), last)
	if exits > 0 {
		fmt.Fprintf(&b, " (its process ended %d times)", exits)
	}
	lines := p.tail.lines()
	if len(lines) > errorTail {
		lines = lines[len(lines)-errorTail:]
	}
	if len(lines) == 0 {
		b.WriteString("\n  (it printed nothing)")
	} else {
		fmt.Fprintf(&b, "\n  last %d log lines of %s:", len(lines), p.spec.id())
		for _, l := range lines {
			b.WriteString("\n    " + l)
		}
	}
	return errors.New(b.String())
}
