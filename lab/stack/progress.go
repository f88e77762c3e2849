package stack

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"golang.org/x/term"
)

// How often a progress line is printed: on a terminal the line is rewritten in place
// every second; elsewhere (a log file, CI) each update is a line of its own, so fewer.
const (
	liveEvery = time.Second
	lineEvery = 15 * time.Second
)

// Progress shows that a long step which prints nothing of its own (go build, minutes
// on a first run) is still going: "label: 1m12s". Start it, then Stop it when the step
// ends.
type Progress struct {
	out   io.Writer
	label string
	live  bool // rewrite one line in place with \r (a terminal)
	now   func() time.Time
	start time.Time
	stop  chan struct{}
	done  sync.WaitGroup
}

// StartProgress starts a progress line on out: live (rewritten in place) when out is a
// terminal, a line every 15 s when it is not.
func StartProgress(out io.Writer, label string) *Progress {
	live := isTerminal(out)
	every := lineEvery
	if live {
		every = liveEvery
	}
	t := time.NewTicker(every)
	p := startProgress(out, label, live, time.Now, t.C)
	p.done.Go(func() { <-p.stop; t.Stop() })
	return p
}

// startProgress prints the first state of the line and then one update for each tick,
// as of the tick's time (a time.Ticker sends the time it ticked); the start and the end
// are read from now. Tests pass a clock and ticks of their own.
func startProgress(out io.Writer, label string, live bool, now func() time.Time, ticks <-chan time.Time) *Progress {
	p := &Progress{out: out, label: label, live: live, now: now, start: now(), stop: make(chan struct{})}
	if live {
		fmt.Fprintf(out, "\r%s: 0s", label)
	} else {
		fmt.Fprintf(out, "%s…\n", label)
	}
	p.done.Go(func() {
		for {
			select {
			case <-p.stop:
				return
			case t := <-ticks:
				p.print(t)
			}
		}
	})
	return p
}

func (p *Progress) print(at time.Time) {
	elapsed := at.Sub(p.start).Round(time.Second)
	if p.live {
		fmt.Fprintf(p.out, "\r%s: %s", p.label, elapsed)
	} else {
		fmt.Fprintf(p.out, "%s: %s\n", p.label, elapsed)
	}
}

// Stop ends the line with the total time ("label: done in 3m58s"), or, when ok is
// false, the time it ran ("label: failed after 12s"); nothing is printed after it
// returns.
func (p *Progress) Stop(ok bool) {
	close(p.stop)
	p.done.Wait()
	end := "done in"
	if !ok {
		end = "failed after"
	}
	cr := ""
	if p.live {
		cr = "\r"
	}
	// On a terminal the final text is longer than any update it overwrites.
	fmt.Fprintf(p.out, "%s%s: %s %s\n", cr, p.label, end, p.now().Sub(p.start).Round(100*time.Millisecond))
}

// isTerminal reports whether w is a terminal (where \r rewrites a line).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}
