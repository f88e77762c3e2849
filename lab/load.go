package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"microlab/lab/loadgen"
	"microlab/lab/stack"
)

// load: `lab load [--rate 50/s] [--duration 2m] [--mix ok=80,declined=10,oos=5,xx=5]
// [--shoppers 20] [--browse 1] [--gateway URL]` — shop traffic against the running lab,
// a progress line every second and a summary at the end. Exit 1 when the lab did not
// keep up (orders skipped, refused or unfinished), so scripts can tell.
func load(ctx context.Context, cfg Config, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("load", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	rate := fs.String("rate", "10/s", "orders per second (50/s, 600/m)")
	duration := fs.Duration("duration", time.Minute, "how long to place orders; in-flight ones are then followed to their end")
	mix := fs.String("mix", loadgen.DefaultMix.String(), "outcome weights: ok, declined (card), oos (out of stock), xx (unshippable)")
	shoppers := fs.Int("shoppers", 20, "demo shoppers the orders are spread over (registered on first use)")
	browse := fs.Int("browse", 1, "reads (products, a product, home) per order")
	maxInFlight := fs.Int("max-in-flight", 0, "orders placed and not yet final before the next is skipped (0: 30 s worth)")
	gateway := fs.String("gateway", "", "the gateway's URL (default: this lab's, http://127.0.0.1:8000)")
	jsonOut := fs.String("json", "", "also write the summary, every accepted order with its end, to this file as JSON")
	if err := fs.Parse(args); errors.Is(err, flag.ErrHelp) {
		return usageErrorf("lab load [--rate 50/s] [--duration 2m] [--mix ok=80,declined=10,oos=5,xx=5] [--shoppers N] [--browse N] [--gateway URL] [--json FILE]")
	} else if err != nil {
		return usageErrorf("%v", err)
	}
	if fs.NArg() > 0 {
		return usageErrorf("unexpected arguments %q", fs.Args())
	}
	lc := loadgen.Config{Duration: *duration, Shoppers: *shoppers, Browse: *browse, MaxInFlight: *maxInFlight, Gateway: *gateway}
	var err error
	if lc.Rate, err = loadgen.ParseRate(*rate); err != nil {
		return usageErrorf("--%v", err)
	}
	if lc.Mix, err = loadgen.ParseMix(*mix); err != nil {
		return usageErrorf("--%v", err)
	}
	if *duration <= 0 || *duration > loadgen.MaxDuration {
		return usageErrorf("--duration %s: want more than 0 and at most %s", *duration, loadgen.MaxDuration)
	}
	if *shoppers < 1 || *shoppers > 1000 || *browse < 0 || *browse > 10 || *maxInFlight < 0 {
		return usageErrorf("--shoppers wants 1 to 1000, --browse 0 to 10, --max-in-flight 0 or more")
	}
	if lc.Gateway == "" {
		gw, _ := stack.Find("gateway")
		lc.Gateway = cfg.Stack().URL(gw)
	}
	if err := loadgen.CheckLocal(ctx, lc.Gateway); err != nil {
		return usageErrorf("%v", err)
	}
	lc.Progress = progressPrinter(stdout)
	s, err := loadgen.Run(ctx, lc)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout)
	s.Table(stdout)
	if *jsonOut != "" {
		raw, err := json.MarshalIndent(s, "", "  ")
		if err != nil {
			return err
		}
		if err := os.WriteFile(*jsonOut, raw, 0o644); err != nil {
			return err
		}
	}
	if !s.KeptUp() {
		return errReported
	}
	return nil
}

// progressPrinter rewrites one line on a terminal; elsewhere (a log, a pipe) it prints a
// line every 5 s so the output stays readable.
func progressPrinter(w io.Writer) func(loadgen.Progress) {
	tty := false
	if f, ok := w.(*os.File); ok {
		if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
			tty = true
		}
	}
	var mu sync.Mutex
	var last time.Time
	return func(p loadgen.Progress) {
		mu.Lock()
		defer mu.Unlock()
		switch {
		case tty:
			fmt.Fprintf(w, "\r\033[K%s", p.Line())
		case p.Done || p.Phase == "preparing" && p.Ready == 0 || time.Since(last) >= 5*time.Second:
			fmt.Fprintln(w, p.Line())
			last = time.Now()
		}
	}
}
