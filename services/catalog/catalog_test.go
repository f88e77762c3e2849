package main

import (
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"microlab/services/contracts"
	"microlab/services/platform/testenv"
)

// start runs catalog in-process against its own database (and vhost: it emits through
// the outbox) and returns its base URL.
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

// TestSetPrice: PUT /products/{sku}/price commits the price and announces
// product.price_changed through the outbox (old and new price); bad input is a 4xx with
// the error shape and announces nothing; the price a product already has announces
// nothing either.
func TestSetPrice(t *testing.T) {
	t.Parallel()
	env := testenv.ServiceEnv(t, "catalog", true)
	tap := testenv.Dial(t, env["AMQP_URL"]).Tap(t, contracts.ExchangeEvents, contracts.ProductPriceChanged)
	base := testenv.Run(t, run, env, nil)
	put := func(sku, body string, out any) int {
		t.Helper()
		code, answer := testenv.PutPrice(t, base, sku, body)
		if err := json.Unmarshal(answer, out); err != nil {
			t.Fatalf("PUT %s %s: decode: %v", sku, body, err)
		}
		return code
	}
	for _, tc := range []struct {
		sku, body string
		code      int
		error     string
	}{
		{"LAB-NOPE", `{"priceCents":100}`, 404, "not_found"},
		{"LAB-MUG", `{"priceCents":-1}`, 400, "invalid_price"},
		{"LAB-MUG", `{"priceCents":100000001}`, 400, "invalid_price"},
		{"LAB-MUG", `{}`, 400, "invalid_price"},
		{"LAB-MUG", `{"priceCents":1.5}`, 400, ""},
		{"LAB-MUG", `{"price":100}`, 400, ""},
		{"LAB-MUG", `{"priceCents":1200}`, 200, ""}, // its price already: nothing to announce
	} {
		var body struct {
			Error struct{ Code, Message string }
		}
		code := put(tc.sku, tc.body, &body)
		if code != tc.code || (code >= 400 && body.Error.Message == "") || (tc.error != "" && body.Error.Code != tc.error) {
			t.Errorf("PUT %s %s: %d %+v, want %d %s", tc.sku, tc.body, code, body, tc.code, tc.error)
		}
	}
	var p Product
	if code := put("LAB-MUG", `{"priceCents":1450}`, &p); code != 200 || p.PriceCents != 1450 || p.SKU != "LAB-MUG" {
		t.Fatalf("PUT LAB-MUG 1450: %d %+v", code, p)
	}
	var got Product
	if getJSON(t, base+"/products/LAB-MUG", &got); got.PriceCents != 1450 {
		t.Fatalf("after the change GET says %d", got.PriceCents)
	}
	select {
	case d := <-tap:
		env, err := contracts.Decode(d.Body)
		if err != nil {
			t.Fatal(err)
		}
		var data contracts.ProductPriceChangedData
		if err := env.DecodeData(&data); err != nil {
			t.Fatal(err)
		}
		want := contracts.ProductPriceChangedData{SKU: "LAB-MUG", OldPriceCents: 1200, PriceCents: 1450, Currency: "EUR"}
		if data != want || env.EventType != contracts.ProductPriceChanged || env.Source != "catalog" || d.MessageId != env.EventID {
			t.Fatalf("got %+v %+v, want %+v (the first event: none of the refusals or the no-op announced)", env, data, want)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no product.price_changed within 30s")
	}
}
