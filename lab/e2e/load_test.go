package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"microlab/lab/loadgen"
	"microlab/lab/reconcile"
)

// The lab CLI, built once per test binary (the generator is what is tested, not the
// race detector on it).
var (
	labCLIOnce sync.Once
	labCLI     string
	labCLIErr  error
)

func labBinary(t *testing.T) string {
	t.Helper()
	labCLIOnce.Do(func() {
		dir, err := os.MkdirTemp("", "microlab-cli-")
		if err != nil {
			labCLIErr = err
			return
		}
		labCLI = filepath.Join(dir, "lab")
		cmd := exec.Command("go", "build", "-o", labCLI, "./lab")
		cmd.Dir = repoRoot()
		if out, err := cmd.CombinedOutput(); err != nil {
			labCLIErr = fmt.Errorf("go build ./lab: %v\n%s", err, out)
		}
	})
	if labCLIErr != nil {
		t.Fatal(labCLIErr)
	}
	return labCLI
}

// TestLoadAgreesWithTheDatabases runs `lab load` briefly against a real lab and holds
// its summary to what the shop's own database says: every order it counts as accepted
// exists, ended as it says, and the orders table holds no order it does not know of
// (bar placements it saw no answer to, which it reports as such).
func TestLoadAgreesWithTheDatabases(t *testing.T) {
	t.Parallel()
	l := startLab(t, labOptions{})
	bin := labBinary(t)
	out := filepath.Join(t.TempDir(), "load.json")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "load", "--rate", "5/s", "--duration", "6s", "--shoppers", "3",
		"--mix", "ok=2,declined=1,oos=1,xx=1", "--gateway", l.api.base, "--json", out)
	cmd.Env = append(os.Environ(), "LAB_DB_PREFIX="+l.cfg.DBPrefix)
	stdout, err := cmd.Output()
	code := cmd.ProcessState.ExitCode()
	if code != 0 && code != 1 { // 1: it ran, and says the lab did not keep up
		t.Fatalf("lab load exited %d (%v):\n%s", code, err, stdout)
	}
	for _, want := range []string{"target     5 orders/s for 6s", "outcome", "unfinished"} {
		if !strings.Contains(string(stdout), want) {
			t.Errorf("summary lacks %q:\n%s", want, stdout)
		}
	}
	raw, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var s loadgen.Summary
	if err := json.Unmarshal(raw, &s); err != nil {
		t.Fatal(err)
	}
	if s.Scheduled != 30 || s.Placed == 0 || int(s.Placed) != len(s.Orders) {
		t.Fatalf("scheduled %d (want 30 at 5/s for 6s), placed %d, %d orders listed", s.Scheduled, s.Placed, len(s.Orders))
	}

	// The shop's truth: every order in orders' database, with its end.
	ledgers, err := reconcile.Ledgers(ctx, l.cfg, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	inDB := map[string]string{}
	for id, o := range ledgers {
		if o.InOrders {
			inDB[id] = o.Status + "/" + o.Reason
		}
	}
	var finished, asExpected int64
	for _, o := range s.Orders {
		got, ok := inDB[o.ID]
		if !ok {
			t.Errorf("order %s counted as accepted is not in orders' database", o.ID)
			continue
		}
		if o.Status == "" { // unfinished: the summary says so; the database may say pending
			continue
		}
		finished++
		if got != o.Status+"/"+o.Reason {
			t.Errorf("order %s: the summary says %s/%s, the database %s", o.ID, o.Status, o.Reason, got)
		}
		if st, reason := o.Outcome.Expected(); o.Status == st && o.Reason == reason {
			asExpected++
		}
		delete(inDB, o.ID)
	}
	for _, o := range s.Orders {
		delete(inDB, o.ID)
	}
	if unanswered := s.Refused[0]; int64(len(inDB)) > unanswered {
		t.Errorf("%d orders in the database the summary does not know of (%d placements unanswered): %v", len(inDB), unanswered, inDB)
	}
	var sumExpected int64
	for _, e := range s.Ends {
		sumExpected += e.Expected
	}
	if finished != s.Finished || asExpected != sumExpected || s.Finished+s.Unfinished != s.Placed {
		t.Errorf("summary: finished %d, as expected %d, unfinished %d of %d placed; its orders: %d finished, %d as expected",
			s.Finished, sumExpected, s.Unfinished, s.Placed, finished, asExpected)
	}
	// Every outcome of the mix was placed and, in a lab at rest, ended as meant.
	for _, e := range s.Ends {
		if e.Placed == 0 {
			t.Errorf("no %s order among 30 placed in a mix of 2:1:1:1", e.Outcome)
		}
		if len(e.Got) > 0 {
			t.Errorf("%s orders ended otherwise: %v", e.Outcome, e.Got)
		}
	}
}
