package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"text/tabwriter"
	"time"

	"microlab/lab/stack"
	"microlab/services/platform/bus"
	"microlab/services/platform/control"
)

// How changes made here show on the dashboard's timeline (as "CLI").
const (
	faultSource = "lab fault"
	resetSource = "lab reset"
)

// fault: `lab fault add SERVICE KIND[=VALUE] [for=D] [on=http|messages|both]
// [instance=ID]`, `lab fault list`, `lab fault clear [SERVICE|INSTANCE]`.
func fault(ctx context.Context, cfg Config, args []string, stdout, stderr io.Writer) error {
	ctx, cancel := context.WithTimeout(ctx, settingsTimeout)
	defer cancel()
	if len(args) == 0 {
		return usageErrorf("want `lab fault add|list|clear`")
	}
	switch sub, rest := args[0], args[1:]; sub {
	case "add":
		if len(rest) < 2 {
			return usageErrorf("want `lab fault add SERVICE KIND[=VALUE] [for=5m] [on=http] [instance=ID]`")
		}
		spec, err := control.ParseFaultArgs(rest[0], rest[1:])
		if err != nil {
			return usageErrorf("%v", err)
		}
		if _, err := spec.Validate(time.Now()); err != nil { // before anything is contacted
			return usageErrorf("%v", err)
		}
		return withPlane(ctx, cfg, stderr, func(p *control.Plane) error {
			f, ch, err := p.AddFault(ctx, spec, faultSource)
			if err == nil || errors.Is(err, control.ErrNotAnnounced) {
				if f.ID != 0 {
					fmt.Fprintf(stdout, "fault %d: %s on %s until %s (revision %d)\n", f.ID, f, f.Target(),
						f.Expires.Local().Format(time.TimeOnly), ch.Revision)
				} else {
					fmt.Fprintf(stdout, "%s: %s (revision %d)\n", ch.Key, ch.New, ch.Revision)
				}
			}
			return err
		})
	case "list":
		if len(rest) != 0 {
			return usageErrorf("lab fault list takes no arguments")
		}
		return listFaults(ctx, cfg, stdout)
	case "clear":
		if len(rest) > 1 {
			return usageErrorf("want `lab fault clear [SERVICE|INSTANCE]` (nothing: every fault)")
		}
		target := ""
		if len(rest) == 1 {
			target = rest[0]
		}
		if err := control.ValidateTarget(target); err != nil {
			return usageErrorf("%v", err)
		}
		return withPlane(ctx, cfg, stderr, func(p *control.Plane) error {
			chs, err := p.ClearFaults(ctx, target, faultSource)
			none := "no fault in force"
			if target != "" {
				none += " on " + target
			}
			printChanges(stdout, chs, none)
			return err
		})
	default:
		return usageErrorf("want `lab fault add|list|clear`, got %q", sub)
	}
}

// reset: `lab reset`: every setting back to its default, every fault cleared.
func reset(ctx context.Context, cfg Config, args []string, stdout, stderr io.Writer) error {
	if len(args) != 0 {
		return usageErrorf("lab reset takes no arguments")
	}
	ctx, cancel := context.WithTimeout(ctx, settingsTimeout)
	defer cancel()
	return withPlane(ctx, cfg, stderr, func(p *control.Plane) error {
		chs, err := p.Reset(ctx, resetSource)
		printChanges(stdout, chs, "")
		return err
	})
}

func printChanges(w io.Writer, chs []control.Change, none string) {
	if len(chs) == 0 && none != "" {
		fmt.Fprintln(w, none)
	}
	for _, ch := range chs {
		fmt.Fprintf(w, "%s: %s → %s (revision %d)\n", ch.Key, ch.Old, ch.New, ch.Revision)
	}
}

func listFaults(ctx context.Context, cfg Config, stdout io.Writer) error {
	store, err := openStore(ctx, cfg)
	if err != nil {
		return err
	}
	defer store.Close()
	fs, err := store.Faults(ctx)
	if err != nil {
		return err
	}
	if len(fs) == 0 {
		fmt.Fprintln(stdout, "no fault in force")
		return nil
	}
	now := time.Now()
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tTARGET\tFAULT\tTIME LEFT\tSOURCE")
	for _, f := range fs {
		target, what := f.Target(), f.String()
		if f.Hidden { // a diagnosis's: where and how much are what the learner is finding out
			target, what = "hidden", control.HiddenFaultText
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\n", f.ID, target, what, f.Expires.Sub(now).Round(time.Second), f.Source)
	}
	return tw.Flush()
}

// withPlane runs fn with the control plane every face goes through: the lab database,
// the broker (to announce; if it cannot be reached, changes are still stored and the
// services pick them up at their next re-read, which is a warning, not a failure), and
// the services' health URLs (a fault on a service nothing answers for is refused).
// control's refusals of bad input are usage errors (exit 2) with its one-line message.
func withPlane(ctx context.Context, cfg Config, stderr io.Writer, fn func(*control.Plane) error) error {
	store, err := openStore(ctx, cfg)
	if err != nil {
		return err
	}
	defer store.Close()
	p := &control.Plane{Store: store, Running: cfg.running}
	quiet := slog.New(slog.DiscardHandler) // bus logs reconnect attempts; the warning says enough
	dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	conn, dialErr := bus.Dial(dctx, cfg.AMQPURL, "lab-cli", quiet)
	cancel()
	if dialErr == nil {
		defer conn.Close()
		p.Pub = bus.NewPublisher(conn, quiet)
	}
	err = fn(p)
	switch {
	case control.IsInvalid(err):
		return usageErrorf("%v", err)
	case errors.Is(err, control.ErrNotAnnounced):
		fmt.Fprintf(stderr, "lab: warning: %v\n", err)
		return nil
	case err != nil:
		return err
	case dialErr != nil:
		fmt.Fprintf(stderr, "lab: warning: %v: %v\n", control.ErrNotAnnounced, dialErr)
	}
	return nil
}

// running is the CLI's Plane.Running: an instance runs if its health URL (/healthz)
// answers; a service if any of its instances' does (instance n listens on the
// service's port + 1000·(n-1), for every scale `lab up --scale` allows).
func (c Config) running(service, instance string) bool {
	n := stack.MaxScale // any scale lab up allows: probe every instance port
	if service == stack.Dashboard {
		n = 1 // runs once; stack refuses to scale it
	}
	all, err := c.Stack().Instances(map[string]int{service: n})
	if err != nil {
		return false
	}
	var probe []stack.Instance
	for _, in := range all {
		if in.Service.Name == service && (instance == "" || in.ID == instance) {
			probe = append(probe, in)
		}
	}
	client := &http.Client{Timeout: 2 * time.Second}
	var (
		wg  sync.WaitGroup
		mu  sync.Mutex
		any bool
	)
	for _, in := range probe {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := client.Get(in.URL() + "/healthz")
			if err != nil {
				return
			}
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				mu.Lock()
				any = true
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return any
}
