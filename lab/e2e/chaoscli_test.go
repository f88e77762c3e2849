package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"microlab/lab/loadgen"
	"microlab/lab/reconcile"
	"microlab/lab/stack"
	"microlab/services/platform/pg"
	"microlab/services/platform/testenv"
)

// chaosRun is what `lab chaos --json` writes.
type chaosRun struct {
	Lab struct {
		DBPrefix      string `json:"dbPrefix"`
		VHost         string `json:"vhost"`
		AdminDatabase string `json:"adminDatabase"`
		AMQP          string `json:"amqp"`
		Management    string `json:"management"`
	} `json:"lab"`
	Faults []struct {
		Fault  string `json:"fault"`
		Detail string `json:"detail"`
		Error  string `json:"error"`
	} `json:"faults"`
	Load   loadgen.Summary   `json:"load"`
	Report *reconcile.Report `json:"report"`
}

// runChaosCLI runs the lab CLI's chaos command with env added to the test's, calls
// onLine with each line it prints as it prints it, and returns its output, its exit
// status and what it wrote to --json (the last argument must be --json's file).
func runChaosCLI(t *testing.T, env []string, onLine func(string), args ...string) (string, int, *chaosRun) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, labBinary(t), append([]string{"chaos"}, args...)...)
	cmd.Env = append(append(os.Environ(), "BCRYPT_COST=4"), env...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr syncBuffer
	cmd.Stderr = &stderr
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		out.WriteString(sc.Text() + "\n")
		onLine(sc.Text())
	}
	_ = cmd.Wait()
	code := cmd.ProcessState.ExitCode()
	t.Logf("lab chaos %s: exit %d after %s\n%s%s", strings.Join(args, " "), code, time.Since(start).Round(time.Second), out.String(), stderr.Tail(5000))
	var run *chaosRun
	if raw, err := os.ReadFile(args[len(args)-1]); err == nil {
		run = &chaosRun{}
		if err := json.Unmarshal(raw, run); err != nil {
			t.Fatalf("lab chaos --json: %v", err)
		}
	}
	return out.String(), code, run
}

// agrees holds lab chaos's printed reconciliation to the test's own, figure by figure.
func agrees(t *testing.T, printed string, r *reconcile.Report) {
	t.Helper()
	want := map[string]int{reconcile.LabelPlaced: r.Placed(), reconcile.LabelInDB: r.InDatabase,
		reconcile.LabelFinal: r.Final(), reconcile.LabelDLQ: r.DLQMessages()}
	for _, k := range reconcile.Kinds {
		want[reconcile.Label(k)] = r.Count(k)
	}
	for label, n := range want {
		m := regexp.MustCompile(`(?m)^  ` + regexp.QuoteMeta(label) + `\s+(\d+)`).FindStringSubmatch(printed)
		if m == nil {
			t.Errorf("the printed report has no row %q", label)
			continue
		}
		if got, _ := strconv.Atoi(m[1]); got != n {
			t.Errorf("printed %s %d, the test's reconciliation %d", label, got, n)
		}
	}
	if r.Placed() == 0 || r.Final() != r.InDatabase || !r.Clean() {
		var b strings.Builder
		r.Table(&b)
		t.Errorf("the test's reconciliation: %d placed, %d of %d final, clean %v:\n%s", r.Placed(), r.Final(), r.InDatabase, r.Clean(), b.String())
	}
	if !strings.Contains(printed, "verdict: clean") {
		t.Error("lab chaos did not print a clean verdict")
	}
}

func acceptedIDs(s loadgen.Summary) []string {
	ids := make([]string, 0, len(s.Orders))
	for _, o := range s.Orders {
		ids = append(ids, o.ID)
	}
	return ids
}

// `lab chaos` as a learner runs it: a lab of its own (its own ports, databases and
// vhost), kill -9 of two services under load, then its reconciliation, which must be
// clean (exit 0) and agree with one the test runs itself over the same databases and
// vhost, kept for it with --keep.
func TestChaosCLI(t *testing.T) {
	t.Parallel()
	bins := binaries(t)
	_ = labBinary(t)
	testenv.HoldLab(t, testenv.Heavy)
	// lab chaos picks free ports and binds them: no other lab of the suite may be doing
	// the same meanwhile.
	started := testenv.StartLock(t)
	admin, amqpURL, mgmt := testenv.AdminDatabaseURL(), testenv.AMQPURL(), testenv.ManagementURL()
	prefix := testenv.Name("e") + "_"
	var (
		mu        sync.Mutex
		dbPrefix  string
		vhost     string
		upPattern = regexp.MustCompile(`^chaos: lab up: .* databases (\S+)\*, vhost (\S+) of`)
	)
	t.Cleanup(func() { // --keep kept them for this test
		mu.Lock()
		defer mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if dbPrefix != "" {
			for _, db := range (stack.Config{DBPrefix: dbPrefix}).Databases() {
				if err := pg.Drop(ctx, admin, db); err != nil {
					t.Log(err)
				}
			}
		}
		if vhost != "" {
			if err := deleteVHost(ctx, mgmt, vhost); err != nil {
				t.Log(err)
			}
		}
	})
	jsonOut := filepath.Join(t.TempDir(), "chaos.json")
	out, code, run := runChaosCLI(t, []string{"LAB_BIN_DIR=" + bins, "LAB_RUN_DIR=" + t.TempDir(), "LAB_DB_PREFIX=" + prefix,
		"ADMIN_DATABASE_URL=" + admin, "AMQP_URL=" + amqpURL, "RABBITMQ_MANAGEMENT_URL=" + mgmt},
		func(line string) {
			if m := upPattern.FindStringSubmatch(line); m != nil {
				mu.Lock()
				dbPrefix, vhost = m[1], m[2]
				mu.Unlock()
				started()
			}
		},
		"--no-build", "--faults", "kill", "--kill", "payments,inventory", "--duration", "6s", "--rate", "5/s",
		"--shoppers", "3", "--mix", "ok=2,declined=1,oos=1,xx=1", "--settle", "1m", "--keep", "--json", jsonOut)
	started()
	if code != 0 {
		t.Errorf("lab chaos exited %d, want 0 (a clean run)", code)
	}
	if run == nil || run.Report == nil {
		t.Fatal("lab chaos wrote no --json report")
	}
	if !strings.HasPrefix(run.Lab.DBPrefix, prefix+"chaos") || run.Lab.DBPrefix != dbPrefix || run.Lab.VHost != vhost {
		t.Errorf("lab: %+v; printed databases %s*, vhost %s; LAB_DB_PREFIX %s", run.Lab, dbPrefix, vhost, prefix)
	}
	if len(run.Faults) != 2 || run.Faults[0].Fault != "kill -9 payments" || run.Faults[1].Fault != "kill -9 inventory" {
		t.Errorf("faults: %+v, want kill -9 payments, then inventory", run.Faults)
	}
	for _, f := range run.Faults {
		if f.Error != "" || !strings.Contains(f.Detail, "→") {
			t.Errorf("%s: %q %q", f.Fault, f.Detail, f.Error)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	r, err := reconcile.Run(ctx, stack.Config{AdminDatabaseURL: run.Lab.AdminDatabase, AMQPURL: run.Lab.AMQP, DBPrefix: run.Lab.DBPrefix},
		reconcile.Options{Accepted: acceptedIDs(run.Load), ManagementURL: run.Lab.Management})
	if err != nil {
		t.Fatal(err)
	}
	if r.Placed() != int(run.Load.Placed) || len(r.DLQ) == 0 {
		t.Errorf("%d placed, the load's summary says %d; %d DLQs", r.Placed(), run.Load.Placed, len(r.DLQ))
	}
	agrees(t, out, r)
}

// `lab chaos --attach` against a running lab (the test's, as `lab up` would run it): the
// kill fault is the control plane's crash fault, the lab's own supervisor restarts the
// process, and the printed reconciliation agrees with the test's over the lab's
// databases.
func TestChaosCLIAttached(t *testing.T) {
	t.Parallel()
	_ = labBinary(t)
	l := startLab(t, labOptions{})
	jsonOut := filepath.Join(t.TempDir(), "chaos.json")
	before := l.sup.PID("payments")
	out, code, run := runChaosCLI(t, []string{"LAB_DB_PREFIX=" + l.cfg.DBPrefix, "LAB_PORT_OFFSET=" + strconv.Itoa(l.cfg.PortOffset),
		"ADMIN_DATABASE_URL=" + l.cfg.AdminDatabaseURL, "AMQP_URL=" + l.cfg.AMQPURL, "RABBITMQ_MANAGEMENT_URL=" + l.mgmt},
		func(string) {},
		"--attach", "--faults", "kill", "--kill", "payments", "--duration", "8s", "--rate", "5/s", "--shoppers", "3",
		"--settle", "1m", "--json", jsonOut)
	if code != 0 {
		t.Errorf("lab chaos --attach exited %d, want 0 (a clean run)", code)
	}
	if run == nil || run.Report == nil {
		t.Fatal("lab chaos wrote no --json report")
	}
	if len(run.Faults) != 1 || run.Faults[0].Fault != "crash payments" || run.Faults[0].Error != "" || !strings.Contains(run.Faults[0].Detail, "crash fault") {
		t.Errorf("faults: %+v, want one crash fault on payments", run.Faults)
	}
	if after := l.sup.PID("payments"); after == before || after == 0 {
		t.Errorf("payments' pid %d before, %d after: the crash fault did not restart it", before, after)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	r, err := reconcile.Run(ctx, l.cfg, reconcile.Options{Accepted: acceptedIDs(run.Load), ManagementURL: l.mgmt})
	if err != nil {
		t.Fatal(err)
	}
	agrees(t, out, r)
}

func deleteVHost(ctx context.Context, mgmtURL, vhost string) error {
	u, err := url.Parse(mgmtURL)
	if err != nil {
		return err
	}
	pass, _ := u.User.Password()
	user := u.User.Username()
	u.User = nil
	req, err := http.NewRequestWithContext(ctx, http.MethodDelete, strings.TrimRight(u.String(), "/")+"/api/vhosts/"+url.PathEscape(vhost), nil)
	if err != nil {
		return err
	}
	req.SetBasicAuth(user, pass)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	_ = resp.Body.Close()
	return nil
}
