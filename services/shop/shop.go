// Package shop holds the shop's pure rules that two deployments of it must agree on:
// the microservices (users, catalog, payments, inventory, shipping) and the monolith
// (services/monolith) that does the same work in one process. A rule lives here once,
// so the strangler fig migration (docs/patterns/monolith-and-strangler-fig.md) moves a
// capability from one side to the other without changing what the shop decides: the
// same card is declined, the same country is not served, the same product is never in
// stock, the same seed accounts and products exist.
//
// It is not a service and owns no data: no database, no broker, no server. It imports
// nothing from services but contracts and platform/httpx (the 400 its order validation
// answers with), so a service importing it still knows no other
// service (services/platform imports_test.go checks both rules).
package shop

import (
	"cmp"
	"slices"
	"strings"

	"microlab/services/contracts"
)

// Product is one seed product: catalog's row (name, price) and inventory's (stock).
type Product struct {
	SKU        string
	Name       string
	PriceCents int64
	Currency   string
	Stock      int
}

// NeverInStock is the product no stock ever covers: exactly-once delivery does not
// exist. Ordering it is the lab's deterministic "out of stock".
const NeverInStock = "LAB-UNICORN"

// SeedProducts is the seed catalog with its stock, in the order of the
// README. catalog's and inventory's migrations insert the same rows in SQL (goose
// migrations are frozen history, so they cannot read this slice); the monolith seeds
// from this slice directly, and shop's tests prove all three agree.
var SeedProducts = []Product{
	{"LAB-MUG", "Lab mug", 1200, "EUR", 1000000},
	{"LAB-TEE", "Trace tee", 2500, "EUR", 1000000},
	{"LAB-HOODIE", "Saga hoodie", 5500, "EUR", 1000000},
	{"LAB-STICKERS", "Sticker pack", 400, "EUR", 1000000},
	{"LAB-NOTEBOOK", "Outbox notebook", 900, "EUR", 1000000},
	{"LAB-PEN", "Idempotent pen", 250, "EUR", 1000000},
	{"LAB-CAP", "Circuit-breaker cap", 1800, "EUR", 1000000},
	{"LAB-SOCKS", "Retry socks", 1100, "EUR", 1000000},
	{"LAB-POSTER", "Topology poster", 1500, "EUR", 1000000},
	{"LAB-BOTTLE", "Queue bottle", 2000, "EUR", 1000000},
	{"LAB-LANYARD", "Span lanyard", 350, "EUR", 1000000},
	{NeverInStock, "Exactly-once unicorn", 9900, "EUR", 0},
}

// Account is a registration: a demo login, or what a sign-up sends.
type Account struct {
	Email, Name, Password string
	// ID is the user id a demo account is seeded with ("" for a sign-up: a new one).
	ID string
}

// DemoAccounts are the README's demo logins, seeded by users and by the monolith
// through their own registration path (so the hash has the configured cost). Their ids
// are fixed, the same on both sides: a demo user's token, whoever issued it, names the
// user both sides know, so Alice's orders stay hers when the strangler fig moves a route.
var DemoAccounts = []Account{
	{Email: "alice@example.com", Name: "Alice", Password: "alice-secret", ID: "00000000-0000-4000-8000-0000000a11ce"},
	{Email: "bob@example.com", Name: "Bob", Password: "bob-secret", ID: "00000000-0000-4000-8000-000000000b0b"},
}

// Card decline reasons. The saga's cancel reason is always payment_declined; these say
// why, for the ledger and the dashboard.
const (
	// ReasonCardDeclined: the test card 4000 0000 0000 0002, which every issuer refuses.
	ReasonCardDeclined = "card_declined"
	// ReasonInvalidCard: not a 13–19 digit Luhn-valid number. orders (and the gateway)
	// validate cards before an order is placed, so this only happens to hand-made input.
	ReasonInvalidCard = "invalid_card"
)

// DeclinedCard is the test card every issuer refuses.
const DeclinedCard = "4000000000000002"

// CardDecision is the simulated issuer. It returns the last four digits (the only part
// of a card number that may ever be logged) and a decline reason, "" when the card
// authorizes: 4000 0000 0000 0002 is declined, any other Luhn-valid 13–19 digit number
// (4242 4242 4242 4242, say) authorizes. Spaces and dashes are ignored.
func CardDecision(card string) (last4, reason string) {
	digits := strings.Map(func(r rune) rune {
		if r == ' ' || r == '-' {
			return -1
		}
		return r
	}, card)
	for _, r := range digits {
		if r < '0' || r > '9' {
			return "", ReasonInvalidCard // not a number: log none of it
		}
	}
	if len(digits) >= 4 {
		last4 = digits[len(digits)-4:]
	}
	switch {
	case len(digits) < 13 || len(digits) > 19 || !Luhn(digits):
		return last4, ReasonInvalidCard
	case digits == DeclinedCard:
		return last4, ReasonCardDeclined
	}
	return last4, ""
}

// Luhn reports whether a string of digits passes the Luhn checksum (the check digit
// every card number ends with; it catches a mistyped digit, not fraud).
func Luhn(digits string) bool {
	sum := 0
	double := false
	for i := len(digits) - 1; i >= 0; i-- {
		d := int(digits[i] - '0')
		if double {
			if d *= 2; d > 9 {
				d -= 9
			}
		}
		sum += d
		double = !double
	}
	return sum%10 == 0
}

// UnservedCountry is the deterministic shipping failure of the checkout (DESIGN §5).
const UnservedCountry = "XX"

// ShippingDecision decides whether a carrier serves country (any case): it returns the
// normalised country and, when none does, the reason the shipment failed ("" when it
// can be scheduled).
func ShippingDecision(country string) (normalized, failure string) {
	normalized = strings.ToUpper(country)
	if normalized == UnservedCountry {
		return normalized, "no carrier serves country " + UnservedCountry
	}
	return normalized, ""
}

// StockLine is a quantity of one SKU.
type StockLine struct {
	SKU string
	Qty int
}

// StockWanted is the stock one order asks for: quantities summed per SKU, sorted by SKU,
// the order in which stock rows are locked (two checkouts of the same products then
// wait for each other instead of deadlocking). ok is false for a malformed order (no
// lines, an empty SKU, a quantity below one).
func StockWanted(items []contracts.Item) (lines []StockLine, ok bool) {
	if len(items) == 0 {
		return nil, false
	}
	qty := map[string]int{}
	for _, it := range items {
		if it.SKU == "" || it.Qty <= 0 {
			return nil, false
		}
		qty[it.SKU] += it.Qty
	}
	return SortedStock(qty), true
}

// SortedStock turns quantities per SKU into lines sorted by SKU.
func SortedStock(qty map[string]int) []StockLine {
	out := make([]StockLine, 0, len(qty))
	for sku, q := range qty {
		out = append(out, StockLine{SKU: sku, Qty: q})
	}
	slices.SortFunc(out, func(a, b StockLine) int { return cmp.Compare(a.SKU, b.SKU) })
	return out
}

// Shortage returns the first line that the stock on hand cannot cover, with unknown
// true when the SKU is not stocked at all; ok is false when every line is covered.
// Checking every line before taking any is what makes a reservation all-or-nothing.
func Shortage(lines []StockLine, onHand map[string]int) (sku string, unknown, ok bool) {
	for _, l := range lines {
		if _, found := onHand[l.SKU]; !found {
			return l.SKU, true, true
		}
	}
	for _, l := range lines {
		if onHand[l.SKU] < l.Qty {
			return l.SKU, false, true
		}
	}
	return "", false, false
}

// Price prices requested lines with the price of each SKU: the priced items and the
// total in cents. The client never sets a price; prices must hold every SKU.
func Price(lines []StockLine, prices map[string]int64) ([]contracts.Item, int64) {
	items := make([]contracts.Item, len(lines))
	var total int64
	for i, l := range lines {
		items[i] = contracts.Item{SKU: l.SKU, Qty: l.Qty, PriceCents: prices[l.SKU]}
		total += prices[l.SKU] * int64(l.Qty)
	}
	return items, total
}

// Last4 keeps the last four digits of a card number: all an order ever stores of it.
func Last4(card string) string {
	var digits []byte
	for i := len(card) - 1; i >= 0 && len(digits) < 4; i-- {
		if c := card[i]; c >= '0' && c <= '9' {
			digits = append([]byte{c}, digits...)
		}
	}
	return string(digits)
}
