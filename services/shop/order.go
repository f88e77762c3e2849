package shop

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"

	"microlab/services/contracts"
	"microlab/services/platform/httpx"
)

// OrderRequest is the body of POST /orders that orders and the monolith both take (the
// gateway moves the public payment.card to the top-level card). One type and one
// validation, so a request refused on one side of the strangler fig is refused on the
// other with the same field and words.
type OrderRequest struct {
	Items           []Line            `json:"items"`
	Card            string            `json:"card"`
	ShippingAddress contracts.Address `json:"shippingAddress"`
}

// Line is one requested order line.
type Line struct {
	SKU string `json:"sku"`
	Qty int    `json:"qty"`
}

// Limits of an order.
const (
	MaxLines = 50
	MaxQty   = 100
)

// Validate checks a request and normalises it (country in capitals): 400 missing_field
// or invalid_field naming the field. The gateway checks the public API's rules before
// this; the services check again, since an internal caller need not be the gateway.
func (r *OrderRequest) Validate() error {
	if len(r.Items) == 0 || len(r.Items) > MaxLines {
		return invalid("items", "must have 1 to %d lines (got %d)", MaxLines, len(r.Items))
	}
	for i, it := range r.Items {
		f := fmt.Sprintf("items[%d]", i)
		switch {
		case strings.TrimSpace(it.SKU) == "":
			return missing(f + ".sku")
		case !httpx.Printable(it.SKU):
			return invalid(f+".sku", "must be printable text")
		case it.Qty < 1 || it.Qty > MaxQty:
			return invalid(f+".qty", "must be an integer from 1 to %d", MaxQty)
		}
	}
	if strings.TrimSpace(r.Card) == "" {
		return missing("card")
	}
	if !httpx.Printable(r.Card) {
		return invalid("card", "must be printable text")
	}
	a := &r.ShippingAddress
	for _, f := range []struct{ name, value string }{
		{"name", a.Name}, {"street", a.Street}, {"city", a.City}, {"postalCode", a.PostalCode}, {"country", a.Country},
	} {
		if strings.TrimSpace(f.value) == "" {
			return missing("shippingAddress." + f.name)
		}
		if !httpx.Printable(f.value) {
			return invalid("shippingAddress."+f.name, "must be printable text (no control characters)")
		}
	}
	a.Country = strings.ToUpper(a.Country)
	if len(a.Country) != 2 || a.Country[0] < 'A' || a.Country[0] > 'Z' || a.Country[1] < 'A' || a.Country[1] > 'Z' {
		return invalid("shippingAddress.country", "must be a two-letter country code")
	}
	return nil
}

// Hash identifies a request for Idempotency-Key: sha256 of its canonical encoding
// (decoded, normalised, encoded again), so whitespace or key order in the original body
// do not make a retry look like a different request. The card is part of the request, so
// it is part of the hash; a hash of a low-entropy number is no real protection, which is
// fine for the lab's public test cards and one more reason a real shop carries a payment
// token instead.
func (r OrderRequest) Hash() string {
	b, _ := json.Marshal(r) // plain strings and ints: cannot fail
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

func missing(field string) error {
	return httpx.Errorf(http.StatusBadRequest, "missing_field", "field %q is required", field)
}

func invalid(field, format string, args ...any) error {
	return httpx.Errorf(http.StatusBadRequest, "invalid_field", "field %q %s", field, fmt.Sprintf(format, args...))
}
