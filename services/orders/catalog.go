package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
)

// Catalog is the client of catalog's internal API. Orders asks it for prices when an
// order is placed, never trusting a price from the client; the answer is copied into
// the order, so a later price change does not alter an order already placed.
type Catalog struct {
	base   string
	client *http.Client // httpx.NewClient: every call is bounded by a timeout
}

var (
	// errUnknownSKU: catalog has no such product (a 4xx for the client: 422).
	errUnknownSKU = errors.New("unknown sku")
	// errCatalogUnavailable: catalog did not answer, or answered 5xx (503: not the
	// client's fault, and worth retrying later).
	errCatalogUnavailable = errors.New("catalog unavailable")
)

// Product is what orders needs of a product.
type Product struct {
	SKU        string `json:"sku"`
	PriceCents int64  `json:"priceCents"`
	Currency   string `json:"currency"`
}

// Product fetches one product: GET /products/{sku} → 200 product | 404.
func (c *Catalog) Product(ctx context.Context, sku string) (Product, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+"/products/"+url.PathEscape(sku), nil)
	if err != nil {
		return Product{}, fmt.Errorf("catalog request: %w", err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := c.client.Do(req)
	if err != nil {
		return Product{}, fmt.Errorf("%w: GET product %s: %v", errCatalogUnavailable, sku, err)
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusNotFound:
		return Product{}, fmt.Errorf("%w: %s", errUnknownSKU, sku)
	case resp.StatusCode != http.StatusOK:
		snippet, _ := io.ReadAll(io.LimitReader(resp.Body, 200))
		return Product{}, fmt.Errorf("%w: GET product %s: %d %s", errCatalogUnavailable, sku, resp.StatusCode,
			strings.TrimSpace(string(snippet)))
	}
	var p Product
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&p); err != nil {
		return Product{}, fmt.Errorf("%w: GET product %s: decode: %v", errCatalogUnavailable, sku, err)
	}
	if p.SKU != sku || p.PriceCents < 0 {
		return Product{}, fmt.Errorf("%w: GET product %s: implausible answer %+v", errCatalogUnavailable, sku, p)
	}
	return p, nil
}
