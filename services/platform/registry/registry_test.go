package registry_test

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"microlab/services/platform/registry"
	"microlab/services/platform/testenv"
)

// open gives the test a lab database of its own (migrated by control.OpenStore, as
// every service's start does) and a registry on it.
func open(t *testing.T) *registry.Registry {
	t.Helper()
	url, _ := testenv.LabDB(t, testenv.Name("reg"))
	r, err := registry.Open(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	return r
}

func ids(t *testing.T, r *registry.Registry, service string) []string {
	t.Helper()
	live, err := r.Live(context.Background(), service)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, in := range live {
		out = append(out, in.ID)
	}
	return out
}

// A heartbeat registers (and renews, with a new URL), Live lists by service and id with
// each instance's version (v1 when none is given), and a deregistered instance is gone
// at once.
func TestRegisterRenewDeregister(t *testing.T) {
	r := open(t)
	ctx := context.Background()
	for _, in := range []registry.Instance{
		{Service: "catalog", ID: "catalog-2", URL: "http://127.0.0.1:9102"},
		{Service: "catalog", ID: "catalog-1", URL: "http://127.0.0.1:8102"},
		{Service: "users", ID: "users-1", URL: "http://127.0.0.1:8101"},
		{Service: "catalog", ID: "catalog-1", URL: "http://127.0.0.1:18102"}, // renewed, moved
		{Service: "catalog", ID: "catalog-v2-1", URL: "http://127.0.0.1:8152", Version: "v2"},
	} {
		if err := r.Register(ctx, in); err != nil {
			t.Fatal(err)
		}
	}
	live, err := r.Live(ctx, "catalog")
	if err != nil {
		t.Fatal(err)
	}
	if len(live) != 3 || live[0].ID != "catalog-1" || live[0].URL != "http://127.0.0.1:18102" || live[1].ID != "catalog-2" ||
		live[2].ID != "catalog-v2-1" || live[0].Version != "v1" || live[2].Version != "v2" {
		t.Fatalf("live catalog instances: %+v", live)
	}
	if err := r.Deregister(ctx, "catalog", "catalog-v2-1"); err != nil {
		t.Fatal(err)
	}
	if err := r.Deregister(ctx, "catalog", "catalog-1"); err != nil {
		t.Fatal(err)
	}
	if got := ids(t, r, "catalog"); len(got) != 1 || got[0] != "catalog-2" {
		t.Fatalf("after deregistering catalog-1: %v", got)
	}
	if got := ids(t, r, "users"); len(got) != 1 {
		t.Fatalf("users: %v", got)
	}
}

// A row not renewed for StaleAfter no longer counts: an instance that died without
// deregistering drops out by itself. Keep renews it meanwhile, and deregisters when
// its context ends.
func TestExpiryAndKeep(t *testing.T) {
	r := open(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := r.Register(ctx, registry.Instance{Service: "catalog", ID: "catalog-9", URL: "http://127.0.0.1:16102"}); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		done <- r.Keep(ctx, registry.Instance{Service: "catalog", ID: "catalog-1", URL: "http://127.0.0.1:8102"},
			slog.New(slog.NewTextHandler(io.Discard, nil)))
	}()
	deadline := time.Now().Add(registry.StaleAfter + 3*time.Second)
	for {
		got := ids(t, r, "catalog")
		if len(got) == 1 && got[0] == "catalog-1" {
			break // catalog-9 expired, catalog-1 kept alive past StaleAfter
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s after the last heartbeat of catalog-9: live %v, want only catalog-1", registry.StaleAfter+3*time.Second, got)
		}
		time.Sleep(200 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Keep: %v", err)
	}
	if got := ids(t, r, "catalog"); len(got) != 0 {
		t.Fatalf("after Keep stopped: %v, want none", got)
	}
}
