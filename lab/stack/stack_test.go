package stack

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"microlab/lab/supervisor"
	"microlab/services/platform/pg"
	"microlab/services/platform/testenv"
)

// patience bounds every wait for something that must happen: starting processes,
// stopping them, a query answering. It only costs time when the test fails anyway, so it
// is long enough for a loaded machine.
const patience = 3 * time.Minute

func moduleRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

func TestInstances(t *testing.T) {
	t.Parallel()
	cfg := Config{Host: "127.0.0.1", PortOffset: 5}
	insts, err := cfg.Instances(map[string]int{"payments": 3})
	if err != nil {
		t.Fatal(err)
	}
	if len(insts) != len(Services)+2 {
		t.Fatalf("%d instances, want %d", len(insts), len(Services)+2)
	}
	got := map[string]string{}
	for _, in := range insts {
		got[in.ID] = in.Addr
	}
	for id, addr := range map[string]string{
		"users-1": "127.0.0.1:8106", "payments-1": "127.0.0.1:8109", "payments-2": "127.0.0.1:9109",
		"payments-3": "127.0.0.1:10109", "gateway-1": "127.0.0.1:8005",
	} {
		if got[id] != addr {
			t.Errorf("%s on %q, want %q", id, got[id], addr)
		}
	}
	if insts[len(insts)-1].ID != "gateway-1" {
		t.Errorf("the gateway must start last, got %s", insts[len(insts)-1].ID)
	}
	for _, bad := range []map[string]int{{"nosuch": 2}, {"payments": 0}, {"payments": MaxScale + 1}} {
		if _, err := cfg.Instances(bad); err == nil {
			t.Errorf("Instances(%v) succeeded", bad)
		}
	}
}

func TestBuildFailureCarriesCompilerOutput(t *testing.T) {
	t.Parallel()
	err := build(t.Context(), moduleRoot(), t.TempDir(), []string{"./lab/stack/testdata/nosuch"}, io.Discard, nil)
	if err == nil || !strings.Contains(err.Error(), "nosuch") {
		t.Fatalf("build of a missing package: %v", err)
	}
}

// Launch wires real processes: the fakesvc binary under every service's name, one
// service scaled to two, each instance checked from outside for its port and environment.
func TestBuildAndLaunch(t *testing.T) {
	t.Parallel()
	bin := t.TempDir()
	var progress strings.Builder
	if err := build(t.Context(), moduleRoot(), bin, []string{"./lab/stack/testdata/fakesvc"}, &progress, nil); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(progress.String(), "building the services: done in ") {
		t.Errorf("no progress lines: %q", progress.String())
	}
	for _, s := range Services {
		if err := os.Symlink(filepath.Join(bin, "fakesvc"), filepath.Join(bin, s.Name)); err != nil {
			t.Fatal(err)
		}
	}
	// Ports are chosen and bound under the machine's start lock, like every lab's.
	started := testenv.StartLock(t)
	offset, err := ClaimOffset(map[string]int{"payments": 2}, testenv.ClaimPorts(t))
	if err != nil {
		t.Fatal(err)
	}
	base := 8000 + offset // the gateway's port
	cfg := Config{
		AdminDatabaseURL: "postgres://postgres@127.0.0.1:5432/postgres",
		AMQPURL:          "amqp://guest:guest@127.0.0.1:5672/t",
		DBPrefix:         "t_",
		PortOffset:       offset,
		Host:             "127.0.0.1",
	}
	sup := supervisor.New(slog.New(slog.NewTextHandler(io.Discard, nil)), io.Discard)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), patience)
		defer cancel()
		if err := sup.StopAll(ctx); err != nil {
			t.Error(err)
		}
	})
	ctx, cancel := context.WithTimeout(t.Context(), patience)
	defer cancel()
	if err := Launch(ctx, cfg, sup, bin, map[string]int{"payments": 2}); err != nil {
		t.Fatal(err)
	}
	started()
	envOf := func(port int) map[string]string {
		t.Helper()
		resp, err := http.Get("http://127.0.0.1:" + strconv.Itoa(port) + "/env")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var env map[string]string
		if err := json.NewDecoder(resp.Body).Decode(&env); err != nil {
			t.Fatal(err)
		}
		return env
	}
	p2 := envOf(base + 104 + 1000)
	if p2["INSTANCE_ID"] != "payments-2" || p2["HTTP_ADDR"] != "127.0.0.1:"+strconv.Itoa(base+1104) {
		t.Errorf("payments-2 env: INSTANCE_ID=%q HTTP_ADDR=%q", p2["INSTANCE_ID"], p2["HTTP_ADDR"])
	}
	if want := "postgres://t_payments:t_payments@127.0.0.1:5432/t_payments"; p2["DATABASE_URL"] != want {
		t.Errorf("payments-2 DATABASE_URL=%q, want %q", p2["DATABASE_URL"], want)
	}
	gw := envOf(base)
	if gw["INSTANCE_ID"] != "gateway-1" || gw["ORDERS_URL"] != "http://127.0.0.1:"+strconv.Itoa(base+103) || gw["DATABASE_URL"] != "" {
		t.Errorf("gateway env: %v", gw)
	}
	if want := "http://127.0.0.1:" + strconv.Itoa(JaegerOTLPHTTPPort+offset); gw["OTEL_EXPORTER_OTLP_ENDPOINT"] != want || gw["DEPLOYMENT_ENVIRONMENT"] != "native" {
		t.Errorf("gateway env: OTEL_EXPORTER_OTLP_ENDPOINT=%q (want %q) DEPLOYMENT_ENVIRONMENT=%q", gw["OTEL_EXPORTER_OTLP_ENDPOINT"], want, gw["DEPLOYMENT_ENVIRONMENT"])
	}
	if !strings.HasSuffix(gw["LAB_DATABASE_URL"], "/t_lab") || gw["AMQP_URL"] != cfg.AMQPURL {
		t.Errorf("gateway env: LAB_DATABASE_URL=%q AMQP_URL=%q", gw["LAB_DATABASE_URL"], gw["AMQP_URL"])
	}
	if sup.PID("payments-2") == 0 || sup.PID("payments-1") == sup.PID("payments-2") {
		t.Error("payments does not run as two processes")
	}
}

// Provision against the machine's PostgreSQL: every role can open its own database, and
// running it again is harmless.
func TestProvision(t *testing.T) {
	t.Parallel()
	cfg := Config{AdminDatabaseURL: testenv.AdminDatabaseURL(), DBPrefix: testenv.Name("p") + "_", Host: "127.0.0.1"}
	ctx, cancel := context.WithTimeout(t.Context(), patience)
	defer cancel()
	if conn, err := pgx.Connect(ctx, cfg.AdminDatabaseURL); err != nil {
		testenv.Missing(t, "PostgreSQL at "+cfg.AdminDatabaseURL, testenv.FixPostgres, err)
	} else {
		_ = conn.Close(ctx)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), patience)
		defer cancel()
		for _, db := range cfg.Databases() {
			if err := pg.Drop(ctx, cfg.AdminDatabaseURL, db); err != nil {
				t.Errorf("drop %s: %v", db, err)
			}
		}
	})
	for range 2 {
		if err := Provision(ctx, cfg); err != nil {
			t.Fatal(err)
		}
	}
	dbs, want := cfg.Databases(), 1 // the lab database, and one per service owning one
	for _, s := range Services {
		if s.DB {
			want++
		}
	}
	if len(dbs) != want || dbs[len(dbs)-1] != cfg.DBPrefix+LabDB {
		t.Fatalf("databases %v", dbs)
	}
	for _, db := range dbs {
		u, err := cfg.DatabaseURL(db)
		if err != nil {
			t.Fatal(err)
		}
		conn, err := pgx.Connect(ctx, u)
		if err != nil {
			t.Fatalf("connect as %s: %v", db, err)
		}
		var name string
		if err := conn.QueryRow(ctx, "SELECT current_database()").Scan(&name); err != nil || name != db {
			t.Errorf("in %q (%v), want %s", name, err, db)
		}
		_ = conn.Close(ctx)
	}
}

// orders calls catalog (prices) and, with notifications.mode=sync, notifications: each
// gets the URL of the lab's own instance.
func TestOrdersUpstreams(t *testing.T) {
	t.Parallel()
	cfg := Config{Host: "127.0.0.1", PortOffset: 7, AdminDatabaseURL: "postgres://u:p@127.0.0.1:5432/postgres"}
	orders, _ := Find("orders")
	env, err := cfg.Env(orders, "orders-1")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"CATALOG_URL=http://127.0.0.1:8109", "NOTIFICATIONS_URL=http://127.0.0.1:8114",
		"CATALOG_GRPC_ADDR=127.0.0.1:8209"} {
		found := false
		for _, kv := range env {
			found = found || kv == want
		}
		if !found {
			t.Errorf("orders' environment lacks %s: %v", want, env)
		}
	}
}

// Catalog serves gRPC on its HTTP port + GRPCPortShift, each instance shifted like its
// HTTP port; the process gets it as GRPC_ADDR.
func TestCatalogGRPCAddr(t *testing.T) {
	t.Parallel()
	cfg := Config{Host: "127.0.0.1", PortOffset: 7, AdminDatabaseURL: "postgres://u:p@127.0.0.1:5432/postgres"}
	insts, err := cfg.Instances(map[string]int{"catalog": 2})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"catalog-1": "127.0.0.1:8209", "catalog-2": "127.0.0.1:9209"}
	for _, in := range insts {
		if in.Service.Name != "catalog" {
			if in.GRPCAddr != "" {
				t.Errorf("%s has a gRPC address %s", in.ID, in.GRPCAddr)
			}
			continue
		}
		p, err := cfg.Proc(in, "/bin")
		if err != nil {
			t.Fatal(err)
		}
		if in.GRPCAddr != want[in.ID] || !slices.Contains(p.Env, "GRPC_ADDR="+want[in.ID]) {
			t.Errorf("%s: GRPCAddr %q, env %v; want GRPC_ADDR=%s", in.ID, in.GRPCAddr, p.Env, want[in.ID])
		}
		delete(want, in.ID)
	}
	if len(want) != 0 {
		t.Errorf("no instances %v", want)
	}
}

// The dashboard calls the gateway and payments' ledger (exercises): the lab's own.
func TestDashboardUpstreams(t *testing.T) {
	t.Parallel()
	cfg := Config{Host: "127.0.0.1", PortOffset: 7, AdminDatabaseURL: "postgres://u:p@127.0.0.1:5432/postgres"}
	d, _ := Find(Dashboard)
	env, err := cfg.Env(d, "dashboard")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"GATEWAY_URL=http://127.0.0.1:8007", "PAYMENTS_URL=http://127.0.0.1:8111", "ORDERS_URL=http://127.0.0.1:8110"} {
		if !slices.Contains(env, want) {
			t.Errorf("the dashboard's environment lacks %s: %v", want, env)
		}
	}
}

// Natively the dashboard gets Jaeger's API and neither UI: this Jaeger has no UI and
// there is no Grafana, so it must not link to them (dashboard/links.go).
func TestDashboardHasNoUIsToLinkTo(t *testing.T) {
	t.Parallel()
	cfg := Config{Host: "127.0.0.1", PortOffset: 7, AdminDatabaseURL: "postgres://u:p@127.0.0.1:5432/postgres"}
	d, _ := Find(Dashboard)
	env, err := cfg.Env(d, "dashboard")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(env, "JAEGER_URL=http://127.0.0.1:16693") {
		t.Errorf("the dashboard's environment lacks Jaeger's API: %v", env)
	}
	for _, e := range env {
		if k, _, _ := strings.Cut(e, "="); k == "JAEGER_UI_URL" || strings.HasPrefix(k, "GRAFANA_") {
			t.Errorf("the native dashboard is given %s", e)
		}
	}
}

// The dashboard runs under a soft memory limit, the services do not need one.
func TestDashboardMemoryLimit(t *testing.T) {
	t.Parallel()
	cfg := Config{Host: "127.0.0.1", AdminDatabaseURL: "postgres://u:p@127.0.0.1:5432/postgres"}
	for _, s := range Services {
		env, err := cfg.Env(s, s.Name+"-1")
		if err != nil {
			t.Fatal(err)
		}
		has := slices.Contains(env, "GOMEMLIMIT="+DashboardMemLimit)
		if has != (s.Name == Dashboard) {
			t.Errorf("%s: GOMEMLIMIT=%s in its environment: %v", s.Name, DashboardMemLimit, has)
		}
	}
}
