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
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"microlab/services/contracts/catalogpb"
)

// Catalog is the client of catalog's internal API. Orders asks it for prices when an
// order is placed, never trusting a price from the client; the answer is copied into
// the order, so a later price change does not alter an order already placed.
//
// The same question goes over one of two transports, chosen per call by the lab's
// catalog.transport: HTTP/JSON (GET /products/{sku}) or gRPC (catalog.v1.Catalog/
// GetProduct). Both answer the same Product and the same errors, so nothing above this
// file knows which one was used; the trace does (an http span or an rpc.system=grpc one).
type Catalog struct {
	base   string
	client *http.Client // httpx.NewClient: every call is bounded by a timeout

	// grpc is the gRPC client; its connection is made lazily on the first gRPC call
	// (grpc.NewClient dials nothing), so at catalog.transport=http it costs nothing.
	grpc catalogpb.CatalogClient
	// useGRPC says, per call, whether to use grpc (nil: never).
	useGRPC func() bool
	// timeout bounds one gRPC call, as httpx.Retry bounds an HTTP attempt (http.timeout).
	timeout func() time.Duration
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

// Product fetches one product over the transport catalog.transport names now.
func (c *Catalog) Product(ctx context.Context, sku string) (Product, error) {
	var (
		p   Product
		err error
	)
	if c.useGRPC != nil && c.useGRPC() {
		p, err = c.productGRPC(ctx, sku)
	} else {
		p, err = c.productHTTP(ctx, sku)
	}
	if err != nil {
		return Product{}, err
	}
	if p.SKU != sku || p.PriceCents < 0 {
		return Product{}, fmt.Errorf("%w: product %s: implausible answer %+v", errCatalogUnavailable, sku, p)
	}
	return p, nil
}

// productHTTP: GET /products/{sku} → 200 product | 404.
func (c *Catalog) productHTTP(ctx context.Context, sku string) (Product, error) {
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
	return p, nil
}

// productGRPC: GetProduct → product | NotFound. InvalidArgument (a SKU catalog would
// never store, e.g. empty) is an unknown SKU too: the customer's input, not catalog's
// trouble. Every other code (Unavailable, DeadlineExceeded, Internal) is catalog
// unavailable, as a 5xx or no answer is over HTTP.
func (c *Catalog) productGRPC(ctx context.Context, sku string) (Product, error) {
	if c.timeout != nil {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.timeout())
		defer cancel()
	}
	resp, err := c.grpc.GetProduct(ctx, &catalogpb.GetProductRequest{Sku: sku})
	switch status.Code(err) {
	case codes.OK:
		return Product{SKU: resp.GetSku(), PriceCents: resp.GetPriceCents(), Currency: resp.GetCurrency()}, nil
	case codes.NotFound, codes.InvalidArgument:
		return Product{}, fmt.Errorf("%w: %s", errUnknownSKU, sku)
	default:
		return Product{}, fmt.Errorf("%w: GetProduct %s: %v", errCatalogUnavailable, sku, err)
	}
}
