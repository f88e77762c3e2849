package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"time"

	"microlab/lab/bench"
	"microlab/lab/loadgen"
)

// runBench: `lab bench [--quick] [--soak 10m] [--phases a,b] [--out DIR] [--use-running]
// [--mix …] [--browse N] [--shoppers N]` — the performance report. It starts a lab of
// its own (its own databases, vhost and ports: a learner's running lab is not touched)
// unless --use-running, measures every phase with progress lines, and writes
// docs/benchmarks.md and docs/benchmarks.json (or into --out). Missed targets are in the
// report, not in the exit status: a measurement that ran is a success.
func runBench(ctx context.Context, cfg Config, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	quick := fs.Bool("quick", false, "a few seconds per phase (tests); the numbers are not comparable")
	soak := fs.Duration("soak", 0, "how long the soak runs at 50/s (default 10m; --quick: 5s)")
	phases := fs.String("phases", "", "run only these phases, comma-separated: "+strings.Join(bench.Phases, ","))
	out := fs.String("out", "", "directory for benchmarks.md and benchmarks.json (default: the repository's docs/)")
	useRunning := fs.Bool("use-running", false, "measure the lab already running (lab up) instead of starting one; no start-up or tracing comparison")
	mix := fs.String("mix", loadgen.DefaultMix.String(), "outcome weights of the orders: ok, declined, oos, xx")
	browse := fs.Int("browse", 0, "browsing reads per order (0: checkouts only)")
	shoppers := fs.Int("shoppers", 0, "demo shoppers the orders are spread over (default 20; --quick: 4)")
	if err := fs.Parse(args); errors.Is(err, flag.ErrHelp) {
		return usageErrorf("lab bench [--quick] [--soak 10m] [--phases %s] [--out DIR] [--use-running]", strings.Join(bench.Phases, ","))
	} else if err != nil {
		return usageErrorf("%v", err)
	}
	if fs.NArg() > 0 {
		return usageErrorf("unexpected arguments %q", fs.Args())
	}
	o := bench.Options{
		Stack: cfg.Stack(), ManagementURL: cfg.ManagementURL, UseRunning: *useRunning, Quick: *quick, Soak: *soak,
		Browse: *browse, Shoppers: *shoppers, Progress: stdout,
	}
	if *phases != "" {
		for p := range strings.SplitSeq(*phases, ",") {
			if p = strings.TrimSpace(p); p != "" {
				o.Phases = append(o.Phases, p)
			}
		}
		if err := bench.CheckPhases(o.Phases); err != nil {
			return usageErrorf("--phases: %v", err)
		}
		if len(o.Phases) == 0 {
			return usageErrorf("--phases: name at least one phase (%s)", strings.Join(bench.Phases, ","))
		}
	}
	var err error
	if o.Mix, err = loadgen.ParseMix(*mix); err != nil {
		return usageErrorf("--%v", err)
	}
	if *soak < 0 || *soak > loadgen.MaxDuration {
		return usageErrorf("--soak %s: want 0 (the default) up to %s", *soak, loadgen.MaxDuration)
	}
	if *browse < 0 || *browse > 10 || *shoppers < 0 || *shoppers > 1000 {
		return usageErrorf("--browse wants 0 to 10, --shoppers 1 to 1000")
	}
	root, rootErr := moduleRoot()
	if rootErr == nil {
		o.Root = root
	}
	dir := *out
	if dir == "" {
		if rootErr != nil {
			return usageErrorf("%v (or say where the report goes with --out DIR)", rootErr)
		}
		dir = filepath.Join(root, "docs")
	}
	if !*useRunning && rootErr != nil {
		return fmt.Errorf("%w: bench builds the services from the repository (or measure a running lab with --use-running)", rootErr)
	}
	if o.BinDir, err = cfg.Bin(); err != nil {
		return err
	}
	start := time.Now()
	r, err := bench.Run(ctx, o)
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("interrupted after %s: nothing written", time.Since(start).Round(time.Second))
		}
		return err
	}
	if err := bench.Write(dir, r); err != nil {
		return fmt.Errorf("write the report: %w", err)
	}
	fmt.Fprintln(stdout)
	for _, t := range r.Targets {
		verdict := "MISSED"
		switch {
		case t.Measured == "":
			verdict = "-"
		case t.Met:
			verdict = "met"
		}
		fmt.Fprintf(stdout, "%-7s %-55s %-28s %s\n", verdict, t.Name, t.Target, t.By)
	}
	fmt.Fprintf(stdout, "\nwrote %s and %s (%s)\n", filepath.Join(dir, bench.MarkdownFile), filepath.Join(dir, bench.JSONFile),
		time.Since(start).Round(time.Second))
	return nil
}
