package main

import (
	"fmt"
	"net/http"
	"regexp"
	"unicode"
	"unicode/utf8"

	"microlab/services/platform/httpx"
)

// OrderRequest is the public body of POST /api/v1/orders. Pointers tell "missing" from
// "zero" so a missing field is named as missing.
type OrderRequest struct {
	Items           []OrderLine `json:"items"`
	Payment         *Payment    `json:"payment"`
	ShippingAddress *Address    `json:"shippingAddress"`
}

// OrderLine is one line of an order. Qty is an int: a float (1.5), an exponent (1e30) or
// anything beyond int64 (2^63) fails to decode and is answered 400 by httpx.Decode.
type OrderLine struct {
	SKU string `json:"sku"`
	Qty *int   `json:"qty"`
}

// Payment carries the (public, test) card number.
type Payment struct {
	Card string `json:"card"`
}

// Address is where the order ships.
type Address struct {
	Name       string `json:"name"`
	Street     string `json:"street"`
	City       string `json:"city"`
	PostalCode string `json:"postalCode"`
	Country    string `json:"country"`
}

// Limits checked at the edge, before anything reaches orders.
const (
	maxLines      = 50
	maxQty        = 100
	maxAddressLen = 200 // characters per address field
	minCardDigits = 13
	maxCardDigits = 19
)

var (
	skuPattern     = regexp.MustCompile(`^[A-Z0-9-]{1,64}$`)
	countryPattern = regexp.MustCompile(`^[A-Z]{2}$`)
)

func missing(field string) error {
	return httpx.Errorf(http.StatusBadRequest, "missing_field", "field %q is required", field)
}

func invalid(field, format string, args ...any) error {
	return httpx.Errorf(http.StatusBadRequest, "invalid_field", "field %q %s", field, fmt.Sprintf(format, args...))
}

// decodeOrder reads and validates an order body. Every failure is a 4xx *httpx.Error
// naming what is wrong (FuzzOrderBody holds it to that).
func decodeOrder(w http.ResponseWriter, r *http.Request) (OrderRequest, error) {
	var o OrderRequest
	if err := httpx.Decode(w, r, &o, httpx.DefaultMaxBody); err != nil {
		return OrderRequest{}, err
	}
	return o, o.validate()
}

func (o OrderRequest) validate() error {
	switch {
	case o.Items == nil:
		return missing("items")
	case len(o.Items) == 0 || len(o.Items) > maxLines:
		return invalid("items", "must have 1 to %d lines (got %d)", maxLines, len(o.Items))
	}
	for i, it := range o.Items {
		f := fmt.Sprintf("items[%d]", i)
		switch {
		case it.SKU == "":
			return missing(f + ".sku")
		case !skuPattern.MatchString(it.SKU):
			return invalid(f+".sku", "must be 1 to 64 of A-Z, 0-9 and '-'")
		case it.Qty == nil:
			return missing(f + ".qty")
		case *it.Qty < 1 || *it.Qty > maxQty:
			return invalid(f+".qty", "must be an integer from 1 to %d", maxQty)
		}
	}
	if o.Payment == nil {
		return missing("payment")
	}
	if o.Payment.Card == "" {
		return missing("payment.card")
	}
	if err := checkCard(o.Payment.Card); err != nil {
		return err
	}
	a := o.ShippingAddress
	if a == nil {
		return missing("shippingAddress")
	}
	for _, f := range []struct{ name, value string }{
		{"name", a.Name}, {"street", a.Street}, {"city", a.City}, {"postalCode", a.PostalCode}, {"country", a.Country},
	} {
		field := "shippingAddress." + f.name
		switch {
		case !visible(f.value):
			// Blank, or only invisible characters (a zero-width space passes TrimSpace):
			// no label printer could print it.
			return missing(field)
		case utf8.RuneCountInString(f.value) > maxAddressLen:
			return invalid(field, "must be at most %d characters", maxAddressLen)
		}
	}
	if !countryPattern.MatchString(a.Country) {
		return invalid("shippingAddress.country", "must be a two-letter country code in capitals (ISO 3166-1 alpha-2)")
	}
	return nil
}

// visible reports whether s has at least one letter, digit, mark, punctuation or symbol.
func visible(s string) bool {
	for _, r := range s {
		if unicode.IsGraphic(r) && !unicode.IsSpace(r) && !unicode.Is(unicode.Cf, r) {
			return true
		}
	}
	return false
}

// checkCard accepts digits and spaces only, 13 to 19 digits, passing the Luhn check
// (the checksum every real card number carries, which catches a mistyped digit).
func checkCard(card string) error {
	bad := func(why string) error {
		return httpx.Errorf(http.StatusBadRequest, "invalid_card", "payment.card %s", why)
	}
	digits := make([]int, 0, maxCardDigits)
	for _, c := range card {
		switch {
		case c == ' ':
		case c >= '0' && c <= '9':
			if len(digits) == maxCardDigits {
				return bad(fmt.Sprintf("must have %d to %d digits", minCardDigits, maxCardDigits))
			}
			digits = append(digits, int(c-'0'))
		default:
			return bad("may contain only digits and spaces")
		}
	}
	if len(digits) < minCardDigits {
		return bad(fmt.Sprintf("must have %d to %d digits", minCardDigits, maxCardDigits))
	}
	sum := 0
	for i := range digits {
		d := digits[len(digits)-1-i]
		if i%2 == 1 { // every second digit from the right is doubled
			if d *= 2; d > 9 {
				d -= 9
			}
		}
		sum += d
	}
	if sum%10 != 0 {
		return bad("is not a valid card number (Luhn check failed)")
	}
	return nil
}

// ordersBody is what orders' internal POST /orders takes: the same order, with the card
// at the top level (orders' contract; the public API groups it under payment).
type ordersBody struct {
	Items           []ordersLine `json:"items"`
	Card            string       `json:"card"`
	ShippingAddress Address      `json:"shippingAddress"`
}

type ordersLine struct {
	SKU string `json:"sku"`
	Qty int    `json:"qty"`
}

// upstreamBody converts a validated public order into orders' body.
func (o OrderRequest) upstreamBody() ordersBody {
	b := ordersBody{Card: o.Payment.Card, ShippingAddress: *o.ShippingAddress}
	for _, it := range o.Items {
		b.Items = append(b.Items, ordersLine{SKU: it.SKU, Qty: *it.Qty})
	}
	return b
}

// checkIdempotencyKey validates the optional Idempotency-Key header: at most 255
// printable ASCII characters. It returns "" when there is none.
func checkIdempotencyKey(h http.Header) (string, error) {
	vs := h.Values("Idempotency-Key")
	if len(vs) == 0 {
		return "", nil
	}
	bad := httpx.Errorf(http.StatusBadRequest, "invalid_idempotency_key",
		"Idempotency-Key must be one value of 1 to 255 printable ASCII characters")
	if len(vs) > 1 || len(vs[0]) == 0 || len(vs[0]) > 255 {
		return "", bad
	}
	for i := 0; i < len(vs[0]); i++ {
		if c := vs[0][i]; c < 0x20 || c > 0x7e {
			return "", bad
		}
	}
	return vs[0], nil
}
