package main

import (
	"fmt"
	"net"
	"net/http"
	"strings"

	"microlab/services/platform/httpx"
)

// hostFilter is the dashboard's answer to DNS rebinding. The Origin check (origin.go)
// stops another site's page from POSTing to 127.0.0.1:8080 — but if evil.example
// resolves, a moment later, to 127.0.0.1, that page is same-origin with "the dashboard"
// as far as the browser knows: its Origin and the Host it sends are both evil.example,
// and they match. What does not match is the Host: the dashboard answers only under its
// own names (localhost, 127.0.0.1, [::1], HTTP_ADDR's host and DASHBOARD_HOSTS), so a
// rebound name gets 403 on every page, API and the websocket.
type hostFilter map[string]bool

func newHostFilter(httpAddr, extra string) (hostFilter, error) {
	f := hostFilter{"localhost": true, "127.0.0.1": true, "::1": true}
	if h, _, err := net.SplitHostPort(httpAddr); err == nil && h != "" && h != "0.0.0.0" && h != "::" {
		f[strings.ToLower(h)] = true
	}
	for _, h := range strings.Split(extra, ",") {
		h = strings.ToLower(strings.TrimSpace(h))
		if h == "" {
			continue
		}
		if strings.ContainsAny(h, "/:@ ") && !strings.HasPrefix(h, "[") && net.ParseIP(h) == nil {
			return nil, fmt.Errorf("DASHBOARD_HOSTS: %q is not a host name", h)
		}
		f[strings.Trim(h, "[]")] = true
	}
	return f, nil
}

// allows reports whether hostport (a request's Host) names the dashboard.
func (f hostFilter) allows(hostport string) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	host = strings.ToLower(strings.Trim(host, "[]"))
	return f[host] || strings.HasSuffix(host, ".localhost") // RFC 6761: always loopback
}

// machinePaths are reached by other processes under whatever name they were given (the
// services' second OTLP exporter, Prometheus' scrape, a supervisor's health check):
// nothing a browser could abuse, so they answer under any Host.
var machinePaths = map[string]bool{"/v1/traces": true, "/metrics": true, "/healthz": true, "/readyz": true}

// wrap refuses requests whose Host is not one of the dashboard's names.
func (f hostFilter) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !machinePaths[r.URL.Path] && !f.allows(r.Host) {
			var body httpx.ErrorBody
			body.Error.Code = "forbidden_host"
			body.Error.Message = fmt.Sprintf("host %q is not one of the dashboard's names (localhost, 127.0.0.1, [::1] or DASHBOARD_HOSTS)", r.Host)
			httpx.WriteJSON(w, http.StatusForbidden, body)
			return
		}
		next.ServeHTTP(w, r)
	})
}
