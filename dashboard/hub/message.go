// Package hub is the dashboard's websocket hub: one writer goroutine per client, a
// bounded send buffer per client that drops (and counts) rather than blocks, so a slow
// browser never delays the others; pings and deadlines; origin checks on the upgrade.
package hub

import "encoding/json"

// Message is what travels on the websocket: a type the browser dispatches on, and its
// data. Types: "traces" ([]ingest.TraceSummary), "flow" (coalesced message counts per
// edge for one frame), "event" (ingest.Event without payload), "saga" (ingest.Saga),
// "metrics", "setting" (a settings change), "stats" (the client's own drop count).
type Message struct {
	Type string          `json:"type"`
	Data json.RawMessage `json:"data"`
}
