package views

import (
	"fmt"
	"strings"
	"time"
)

// ComposeCommand is how a learner starts the lab that has Jaeger's UI and Grafana.
const ComposeCommand = "docker compose -f compose/docker-compose.yml up"

// The states of a UI the dashboard links to but does not serve.
const (
	UIAbsent    = "absent"    // not part of this lab: no link base configured
	UIUnchecked = "unchecked" // configured, not probed yet (the first probe runs at start)
	UIUp        = "up"        // the last probe found it answering
	UIDown      = "down"      // the last probe found nothing, or something else, there
)

// UI is Jaeger's UI or Grafana as the dashboard last found it. Pages link to it only
// when it is up (Link); otherwise they say why there is no link (Why), in place: a
// link to a page that does not answer teaches nothing but that the lab is broken.
type UI struct {
	Name string // "Jaeger's UI", "Grafana"
	// Base is the link base as the learner's browser reaches it ("" = not part of this
	// lab). It is not where the dashboard probes: in compose that is a container's name.
	Base string
	// Probed is where the dashboard asks whether it answers (masked if it has a password).
	Probed  string
	State   string    // UIAbsent, UIUnchecked, UIUp, UIDown
	Detail  string    // UIDown: what the probe found instead
	Checked time.Time // when the state was found (zero: never)
	// Without explains UIAbsent: what this lab runs instead.
	Without string
}

// Link is Base+path when the UI is up, "" otherwise.
func (u UI) Link(path string) string {
	if u.State != UIUp {
		return ""
	}
	return strings.TrimRight(u.Base, "/") + path
}

// Why is the sentence a page shows instead of the link; purpose completes "run the
// compose lab … to <purpose>" ("open this trace in Jaeger"). "" when the UI is up.
func (u UI) Why(purpose string) string {
	switch u.State {
	case UIUp:
		return ""
	case UIAbsent:
		return fmt.Sprintf("%s is not part of this lab (%s) — run the compose lab (%s) to %s.", u.Name, u.Without, ComposeCommand, purpose)
	case UIDown:
		return fmt.Sprintf("%s is not answering at %s (checked at %s: %s): no link until it does.",
			u.Name, u.Probed, Clock(u.Checked), u.Detail)
	default:
		return fmt.Sprintf("%s at %s has not been checked yet: the link appears once it answers.", u.Name, u.Base)
	}
}

// Short is the state in a few words, for a place too small for Why (a line of an
// exercise's text that names the UI's address).
func (u UI) Short() string {
	switch u.State {
	case UIUp:
		return ""
	case UIAbsent:
		return "not part of this lab"
	case UIDown:
		return "not answering"
	default:
		return "not checked yet"
	}
}

// GrafanaPurpose completes the sentence said instead of links to Grafana's panels.
const GrafanaPurpose = "see these panels in Grafana"

// Externals are the UIs pages link to.
type Externals struct {
	Jaeger  UI // links to /trace/<id>
	Grafana UI // links to /d/<uid>?viewPanel=<id>
}
