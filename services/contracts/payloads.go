package contracts

import "errors"

// Saga modes. The mode is chosen when an order is placed and travels with every message
// of that checkout, so switching the lab setting never strands an in-flight saga: it
// finishes in the mode it started in.
const (
	ModeChoreography  = "choreography"
	ModeOrchestration = "orchestration"
)

// Cancel reasons (order.cancelled, payment.refunded, stock.released).
const (
	ReasonPaymentDeclined = "payment_declined"
	ReasonOutOfStock      = "out_of_stock"
	ReasonShippingFailed  = "shipping_failed"
	ReasonTimeout         = "timeout"
)

// Item is one order line.
type Item struct {
	SKU        string `json:"sku"`
	Qty        int    `json:"qty"`
	PriceCents int64  `json:"priceCents,omitempty"`
}

// Address is a shipping address.
type Address struct {
	Name       string `json:"name"`
	Street     string `json:"street"`
	City       string `json:"city"`
	PostalCode string `json:"postalCode"`
	Country    string `json:"country"`
}

// Saga is carried by every checkout message: which order, and which mode it runs in.
type Saga struct {
	OrderID  string `json:"orderId"`
	SagaMode string `json:"sagaMode"`
}

// Check implements the validation DecodeData runs.
func (s Saga) Check() error {
	if s.OrderID == "" {
		return errors.New("missing orderId")
	}
	if s.SagaMode != ModeChoreography && s.SagaMode != ModeOrchestration {
		return errors.New("sagaMode must be choreography or orchestration")
	}
	return nil
}

// Checkout is the state that travels along the choreography (event-carried state
// transfer): each step forwards what the later steps need, so no service has to ask
// another for it.
type Checkout struct {
	Saga
	UserID          string  `json:"userId"`
	Items           []Item  `json:"items"`
	TotalCents      int64   `json:"totalCents"`
	Currency        string  `json:"currency"`
	ShippingAddress Address `json:"shippingAddress"`
}

// OrderPlacedData is order.placed. Card is the test card number; a real shop would carry
// a payment token, never a card number (the lab's cards are public test numbers).
type OrderPlacedData struct {
	Checkout
	Card string `json:"card"`
}

// PaymentsAuthorizeData is the payments.authorize command.
type PaymentsAuthorizeData = OrderPlacedData

// PaymentAuthorizedData is payment.authorized.
type PaymentAuthorizedData struct {
	Checkout
	PaymentID   string `json:"paymentId"`
	AmountCents int64  `json:"amountCents"`
}

// PaymentDeclinedData is payment.declined.
type PaymentDeclinedData struct {
	Saga
	Reason string `json:"reason"`
}

// PaymentRefundData is the payments.refund command.
type PaymentRefundData struct {
	Saga
	Reason string `json:"reason"`
}

// PaymentRefundedData is payment.refunded. AmountCents is 0 when there was nothing to
// refund (the authorization never happened); the event is still sent so the saga can end.
type PaymentRefundedData struct {
	Saga
	PaymentID   string `json:"paymentId,omitempty"`
	AmountCents int64  `json:"amountCents"`
	Reason      string `json:"reason"`
}

// InventoryReserveData is the inventory.reserve command.
type InventoryReserveData struct {
	Checkout
}

// StockReservedData is stock.reserved.
type StockReservedData struct {
	Checkout
}

// StockRejectedData is stock.rejected.
type StockRejectedData struct {
	Saga
	SKU    string `json:"sku,omitempty"`
	Reason string `json:"reason"`
}

// InventoryReleaseData is the inventory.release command.
type InventoryReleaseData struct {
	Saga
	Reason string `json:"reason"`
}

// StockReleasedData is stock.released.
type StockReleasedData struct {
	Saga
	Reason string `json:"reason"`
}

// ShippingScheduleData is the shipping.schedule command.
type ShippingScheduleData struct {
	Checkout
}

// ShipmentScheduledData is shipment.scheduled.
type ShipmentScheduledData struct {
	Checkout
	ShipmentID string `json:"shipmentId"`
}

// ShipmentFailedData is shipment.failed.
type ShipmentFailedData struct {
	Saga
	Reason string `json:"reason"`
}

// OrderConfirmedData is order.confirmed.
type OrderConfirmedData struct {
	Saga
	UserID     string `json:"userId"`
	TotalCents int64  `json:"totalCents"`
}

// OrderCancelledData is order.cancelled.
type OrderCancelledData struct {
	Saga
	UserID string `json:"userId"`
	Reason string `json:"reason"`
}

// NotificationSentData is notification.sent.
type NotificationSentData struct {
	NotificationID string `json:"notificationId"`
	UserID         string `json:"userId"`
	OrderID        string `json:"orderId,omitempty"`
	Kind           string `json:"kind"`
	Channel        string `json:"channel"`
}

// UserRegisteredData is user.registered.
type UserRegisteredData struct {
	UserID string `json:"userId"`
	Email  string `json:"email"`
	Name   string `json:"name"`
}

// Check implements the validation DecodeData runs.
func (u UserRegisteredData) Check() error {
	if u.UserID == "" {
		return errors.New("missing userId")
	}
	return nil
}

// ProductPriceChangedData is product.price_changed: the price a SKU has from now on.
// The old price travels too, so a reader of the event stream (the dashboard's wiretap, a
// learner) sees the change without asking catalog.
type ProductPriceChangedData struct {
	SKU           string `json:"sku"`
	OldPriceCents int64  `json:"oldPriceCents"`
	PriceCents    int64  `json:"priceCents"`
	Currency      string `json:"currency"`
}

// Check implements the validation DecodeData runs.
func (p ProductPriceChangedData) Check() error {
	switch {
	case p.SKU == "":
		return errors.New("missing sku")
	case p.PriceCents < 0:
		return errors.New("priceCents must not be negative")
	}
	return nil
}
