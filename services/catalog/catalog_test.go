package main

import (
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"

	"microlab/services/platform/testenv"
)

// start runs catalog in-process (no bus: Consumes is false) against its own database and
// returns its base URL.
func start(t *testing.T) string {
	t.Helper()
	return testenv.Run(t, run, testenv.ServiceEnv(t, "catalog", true), nil)
}

func getJSON(t *testing.T, url string, out any) int {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("GET %s: Content-Type %q", url, ct)
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		t.Fatalf("GET %s: decode: %v", url, err)
	}
	return resp.StatusCode
}

func TestCatalog(t *testing.T) {
	t.Parallel()
	base := start(t)

	t.Run("list", func(t *testing.T) {
		var list struct{ Items []Product }
		if code := getJSON(t, base+"/products", &list); code != http.StatusOK {
			t.Fatalf("status %d", code)
		}
		if len(list.Items) != 12 {
			t.Fatalf("want the 12 seeded products, got %d", len(list.Items))
		}
		if !slices.IsSortedFunc(list.Items, func(a, b Product) int { return strings.Compare(a.SKU, b.SKU) }) {
			t.Fatalf("not sorted by sku: %+v", list.Items)
		}
		for _, p := range list.Items {
			if p.Currency != "EUR" || p.PriceCents <= 0 || p.Name == "" {
				t.Fatalf("bad product %+v", p)
			}
		}
	})

	for _, tc := range []struct {
		sku   string
		code  int
		want  Product
		error string
	}{
		{sku: "LAB-MUG", code: 200, want: Product{SKU: "LAB-MUG", Name: "Lab mug", PriceCents: 1200, Currency: "EUR"}},
		{sku: "LAB-UNICORN", code: 200, want: Product{SKU: "LAB-UNICORN", Name: "Exactly-once unicorn", PriceCents: 9900, Currency: "EUR"}},
		{sku: "LAB-NOPE", code: 404, error: "not_found"},
		{sku: "lab-mug", code: 404, error: "not_found"}, // SKUs are case-sensitive
		{sku: "%27%3B%20DROP", code: 404, error: "not_found"},
	} {
		t.Run("get "+tc.sku, func(t *testing.T) {
			var body struct {
				Product
				Error struct{ Code, Message string }
			}
			code := getJSON(t, base+"/products/"+tc.sku, &body)
			if code != tc.code {
				t.Fatalf("status %d, want %d", code, tc.code)
			}
			if tc.error != "" {
				if body.Error.Code != tc.error || body.Error.Message == "" {
					t.Fatalf("error %+v, want code %s", body.Error, tc.error)
				}
				return
			}
			if body.Product != tc.want {
				t.Fatalf("got %+v, want %+v", body.Product, tc.want)
			}
		})
	}
}
