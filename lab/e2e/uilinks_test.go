package e2e

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"microlab/lab/stack"
)

// The native lab's Jaeger (built from tools/ without the UI assets) still answers at
// its root, 200 and HTML, with a placeholder page. Even when told a UI link base
// (JAEGER_UI_URL), the dashboard's probe must see that real Jaeger has no UI, and say
// so, rather than link a learner to the placeholder.
func TestDashboardSeesJaegerHasNoUI(t *testing.T) {
	t.Parallel()
	l := startLab(t, labOptions{tracing: true, env: []string{"JAEGER_UI_URL=http://localhost:16686", "LINK_PROBE_INTERVAL=1s"}})
	d, _ := stack.Find(stack.Dashboard)
	dash := &dashAPI{base: l.cfg.URL(d), http: &http.Client{Timeout: 30 * time.Second}}
	token := l.api.login(t, "alice@example.com", "alice-secret")
	_, traceID, _ := l.api.placeTraced(t, token, newOrder(cardOK, skuOK, "DE"))

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var body struct {
		Jaeger     string `json:"jaeger"`
		JaegerNote string `json:"jaegerNote"`
	}
	// 404 until the trace's spans reach the dashboard; then the probe's verdict (the
	// first probe may have run before Jaeger listened: it is asked again every second).
	for !strings.Contains(body.JaegerNote, "this Jaeger was built without its UI") {
		if ctx.Err() != nil {
			t.Fatalf("with the native Jaeger, trace %s: jaeger %q, jaegerNote %q", traceID, body.Jaeger, body.JaegerNote)
		}
		time.Sleep(500 * time.Millisecond)
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, dash.base+"/api/traces/"+traceID, nil)
		if resp, err := dash.http.Do(req); err == nil {
			if resp.StatusCode == http.StatusOK {
				_ = json.NewDecoder(resp.Body).Decode(&body)
			}
			resp.Body.Close()
		}
	}
	if body.Jaeger != "" || !strings.Contains(body.JaegerNote, "Jaeger's UI is not answering at "+l.cfg.JaegerURL()) {
		t.Errorf("with the native Jaeger: jaeger %q, jaegerNote %q", body.Jaeger, body.JaegerNote)
	}
}
