package main

import (
	"net/http"

	"microlab/dashboard/hub"
)

// requireSameOrigin is the one place the dashboard decides whether a state-changing
// request (anything but GET, HEAD, OPTIONS) may proceed: hub's rule, the same one the
// websocket's upgrade applies. A browser sends Origin with every POST and it must name
// this server; a request with neither Origin nor Referer is refused too, so scripts
// (curl, tests) set `Origin: http://127.0.0.1:8080`. This is what stops a page on any
// other site from flipping the lab's switches through the learner's browser (CSRF): the
// dashboard has no login to protect it otherwise.
//
// It wraps the pages and the APIs, not the OTLP receiver (services POST spans without
// an Origin) nor /ws (the hub checks it on the upgrade).
func requireSameOrigin(next http.Handler) http.Handler { return hub.RequireSameOrigin(nil, next) }
