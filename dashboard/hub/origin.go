package hub

import (
	"net/http"
	"net/url"
	"strings"

	"microlab/services/platform/httpx"
)

// Why origin checks at all: a browser lets ANY page the learner has open (another tab, an
// ad, a malicious link) open a websocket to 127.0.0.1:8080 or POST a form to it, and it
// sends the learner's cookies along. CORS does not stop either: websockets are not
// covered by CORS, and a "simple" cross-origin POST is sent before CORS is consulted, so
// only the answer is hidden from the attacker, not the side effect (a fault injected, a
// replay started). What the browser does guarantee is an honest Origin header, so the
// server checks it itself.
//
// What this does NOT stop: DNS rebinding (evil.example resolves to 127.0.0.1, so its
// Origin and the Host it sends match). Guarding against that means checking the Host
// header against the names the dashboard is served under (localhost, 127.0.0.1), a
// separate check for the dashboard's server to make in front of everything.

// SameOrigin reports whether r comes from the dashboard's own pages or from one of the
// allowed origins (exact "scheme://host[:port]" values, e.g. "http://localhost:5173").
//
// It reads the Origin header, or the Referer when Origin is absent (some older browsers
// omit Origin on same-origin POSTs; Referer carries the same information). With neither
// it answers false: every browser sends Origin on websockets and on cross-origin or
// state-changing requests, so a request without both comes from a tool (curl, a test),
// and tools can set the header. "Refuse when in doubt" keeps the rule one line long.
//
// Same origin means the header's host[:port] equals the request's Host, which is what
// the browser used to reach us. The scheme is not compared with the request's because
// behind a TLS-terminating proxy the server cannot know it; a default port (:80 for
// http, :443 for https) is ignored on both sides, as browsers omit it.
func SameOrigin(r *http.Request, allowed []string) bool {
	raw := r.Header.Get("Origin")
	if raw == "" {
		raw = r.Header.Get("Referer")
	}
	if raw == "" {
		return false
	}
	scheme, host, ok := parseOrigin(raw)
	if !ok {
		// Includes Origin "null", sent by sandboxed iframes and file:// pages.
		return false
	}
	if host == canonicalHost(scheme, r.Host) {
		return true
	}
	origin := scheme + "://" + host
	for _, a := range allowed {
		if as, ah, ok := parseOrigin(a); ok && as+"://"+ah == origin {
			return true
		}
	}
	return false
}

// RequireSameOrigin wraps next so that any request that may change state (anything but
// GET, HEAD and OPTIONS) is refused with 403 unless SameOrigin accepts it. Safe methods
// pass untouched: they must not change state anyway, and the browser already keeps their
// answers from a foreign page (that part IS what CORS does).
func RequireSameOrigin(allowed []string, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.Method {
		case http.MethodGet, http.MethodHead, http.MethodOptions:
			next.ServeHTTP(w, r)
			return
		}
		if !SameOrigin(r, allowed) {
			writeError(w, http.StatusForbidden, "forbidden_origin", forbiddenMessage(r))
			return
		}
		next.ServeHTTP(w, r)
	})
}

// forbiddenMessage says what was refused and how to fix it, for whoever reads the 403.
func forbiddenMessage(r *http.Request) string {
	o := r.Header.Get("Origin")
	if o == "" {
		o = r.Header.Get("Referer")
	}
	if o == "" {
		return "request has no Origin or Referer header; only the dashboard's own pages may do this (tools: set Origin to the dashboard's URL)"
	}
	return "origin " + o + " is not the dashboard's origin (" + r.Host + ") nor an allowed one"
}

// parseOrigin splits an origin (or any absolute http(s) URL, such as a Referer) into
// its lower-cased scheme and host[:port], the port dropped when it is the scheme's
// default. ok is false for anything that is not an http(s) URL with a host.
func parseOrigin(raw string) (scheme, host string, ok bool) {
	u, err := url.Parse(strings.TrimSpace(raw))
	if err != nil || u.Host == "" || u.User != nil {
		return "", "", false
	}
	scheme = strings.ToLower(u.Scheme)
	if scheme != "http" && scheme != "https" {
		return "", "", false
	}
	return scheme, canonicalHost(scheme, u.Host), true
}

// canonicalHost lower-cases host and removes the scheme's default port, so that
// "Example.com:443" and "example.com" compare equal for https.
func canonicalHost(scheme, host string) string {
	host = strings.ToLower(host)
	switch {
	case scheme == "http" && strings.HasSuffix(host, ":80"):
		return strings.TrimSuffix(host, ":80")
	case scheme == "https" && strings.HasSuffix(host, ":443"):
		return strings.TrimSuffix(host, ":443")
	}
	return host
}

// writeError answers in the shop's one error shape, {"error": {"code", "message"}}.
func writeError(w http.ResponseWriter, status int, code, message string) {
	var body httpx.ErrorBody
	body.Error.Code, body.Error.Message = code, message
	httpx.WriteJSON(w, status, body)
}
