package main

import (
	"context"
	"net/http"
	"testing"
	"time"

	"microlab/services/platform/control"
	"microlab/services/platform/registry"
	"microlab/services/platform/testenv"
)

// Catalog v2, as lab up runs it (VERSION=v2): its products carry "catalogVersion":"v2"
// and it registers as v2 in the service registry; while deploy.catalog.v2=good no read
// fails, and once the lab sets bad (live, no restart) exactly one read in four answers
// 500 v2_bug. v1 never carries the field and never fails.
func TestCatalogV2(t *testing.T) {
	t.Parallel()
	env := testenv.ServiceEnv(t, "catalog", true)
	env["VERSION"] = "v2"
	env["INSTANCE_ID"] = "catalog-v2-1"
	base := testenv.Run(t, run, env, nil)
	v1env := env.Share(t, "catalog", true)
	delete(v1env, "VERSION") // the default: v1
	v1env["INSTANCE_ID"] = "catalog-1"
	v1 := testenv.Run(t, run, v1env, nil)

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	store, err := control.OpenStore(ctx, env["LAB_DATABASE_URL"])
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(store.Close)
	reg, err := registry.Open(ctx, env["LAB_DATABASE_URL"])
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(reg.Close)
	deadline := time.Now().Add(10 * time.Second)
	for {
		live, err := reg.Live(ctx, "catalog")
		if err != nil {
			t.Fatal(err)
		}
		versions := map[string]string{}
		for _, in := range live {
			versions[in.ID] = in.Version
		}
		if versions["catalog-v2-1"] == "v2" && len(live) == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("registry: %+v, want catalog-v2-1 as v2 and the v1 instance", live)
		}
		time.Sleep(100 * time.Millisecond)
	}

	var p Product
	if code := getJSON(t, base+"/products/LAB-MUG", &p); code != 200 || p.CatalogVersion != "v2" {
		t.Fatalf("v2 GET /products/LAB-MUG: %d %+v, want catalogVersion v2", code, p)
	}
	var list struct{ Items []Product }
	if code := getJSON(t, base+"/products", &list); code != 200 || len(list.Items) == 0 || list.Items[0].CatalogVersion != "v2" {
		t.Fatalf("v2 GET /products: %d %+v", code, list)
	}
	var p1 Product // a fresh one: decoding leaves a field the answer lacks as it was
	if code := getJSON(t, v1+"/products/LAB-MUG", &p1); code != 200 || p1.CatalogVersion != "" || p1.SKU != "LAB-MUG" {
		t.Fatalf("v1 GET /products/LAB-MUG: %d %+v, want no catalogVersion", code, p1)
	}
	failures := func(url string, n int) int {
		t.Helper()
		failed := 0
		for range n {
			resp, err := http.Get(url)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			switch resp.StatusCode {
			case 200:
			case 500:
				failed++
			default:
				t.Fatalf("GET %s: %s", url, resp.Status)
			}
		}
		return failed
	}
	if f := failures(base+"/products/LAB-MUG", 40); f != 0 {
		t.Fatalf("good v2: %d of 40 reads failed", f)
	}
	if _, err := store.Set(ctx, control.DeployCatalogV2, control.V2Bad, "test"); err != nil {
		t.Fatal(err)
	}
	// No broker announcement from a bare store: the instance applies it at its re-read.
	deadline = time.Now().Add(15 * time.Second)
	for failures(base+"/products/LAB-MUG", badEvery) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("deploy.catalog.v2=bad never reached catalog v2")
		}
		time.Sleep(200 * time.Millisecond)
	}
	if f := failures(base+"/products", 40); f != 40/badEvery {
		t.Fatalf("bad v2: %d of 40 reads failed, want exactly %d", f, 40/badEvery)
	}
	if f := failures(v1+"/products", 40); f != 0 {
		t.Fatalf("v1 while deploy.catalog.v2=bad: %d of 40 reads failed, want 0", f)
	}
}
