package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"microlab/dashboard/views"
	"microlab/services/platform/config"
)

// probeTimeout bounds one probe: a UI that takes longer to answer its front page is not
// one to send a learner to, and a hung peer must not hold the next round up.
const probeTimeout = 3 * time.Second

// uiProbe finds out whether one UI the dashboard links to (Jaeger's, Grafana) answers,
// and keeps what it found for the pages: a link is rendered only to a UI found up.
type uiProbe struct {
	ui    views.UI // Name, Base, Probed, Without: fixed at start
	url   string   // the GET that answers the question (the dashboard's own address for it)
	check func(resp *http.Response, body []byte) error
	http  *http.Client

	mu  sync.Mutex
	cur views.UI
}

func newUIProbe(ui views.UI, probe string, check func(*http.Response, []byte) error, client *http.Client) *uiProbe {
	ui.Probed = config.MaskURL(probe)
	ui.State = views.UIUnchecked
	if ui.Base == "" {
		ui.State = views.UIAbsent
	}
	return &uiProbe{ui: ui, url: probe, check: check, http: client, cur: ui}
}

// state is the UI as last found.
func (p *uiProbe) state() views.UI {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cur
}

// probe asks once and records the answer. A UI not part of this lab is never asked.
func (p *uiProbe) probe(ctx context.Context) views.UI {
	if p.ui.State == views.UIAbsent {
		return p.ui
	}
	u := p.ui
	u.Checked = time.Now()
	if err := p.ask(ctx); err != nil {
		u.State, u.Detail = views.UIDown, err.Error()
	} else {
		u.State = views.UIUp
	}
	p.mu.Lock()
	p.cur = u
	p.mu.Unlock()
	return u
}

func (p *uiProbe) ask(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.url, nil)
	if err != nil {
		return err
	}
	resp, err := p.http.Do(req)
	if err != nil {
		// The client's error repeats the URL (password and all); the page names the
		// address already, so the cause alone is said.
		if ue := (*url.Error)(nil); errors.As(err, &ue) {
			return ue.Err
		}
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 256<<10))
	return p.check(resp, body)
}

// jaegerUIAnswers: Jaeger's query service serves its UI at its root. A Jaeger built
// without the UI assets (the native lab's, see lab/stack) answers there too, 200 and
// HTML, with a placeholder page: so the test is the UI's own root element, which the
// real index.html has and the placeholder does not.
func jaegerUIAnswers(resp *http.Response, body []byte) error {
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	if !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		return fmt.Errorf("not a web page (Content-Type %q)", resp.Header.Get("Content-Type"))
	}
	if bytes.Contains(body, []byte("placeholder for the Jaeger UI")) {
		return fmt.Errorf("this Jaeger was built without its UI")
	}
	if !bytes.Contains(body, []byte(`id="jaeger-ui-root"`)) {
		return fmt.Errorf("a web page, but not Jaeger's UI")
	}
	return nil
}

// grafanaAnswers: Grafana's /api/health is 200 with {"database": "ok", …} when it can
// serve dashboards (503 while its database is not); any other 200 is something else.
func grafanaAnswers(resp *http.Response, body []byte) error {
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("/api/health: HTTP %d", resp.StatusCode)
	}
	var h struct {
		Database string `json:"database"`
	}
	if err := json.Unmarshal(body, &h); err != nil || h.Database == "" {
		return fmt.Errorf("/api/health answers, but not as Grafana does")
	}
	if h.Database != "ok" {
		return fmt.Errorf("its database is %q", h.Database)
	}
	return nil
}

// externals is what pages link to, as last probed.
func (s *server) externals() views.Externals {
	return views.Externals{Jaeger: s.jaegerUI.state(), Grafana: s.grafana.state()}
}

// probeLinks probes both UIs once (in parallel: one slow peer does not delay the other).
func (s *server) probeLinks(ctx context.Context) {
	var wg sync.WaitGroup
	for _, p := range []*uiProbe{s.jaegerUI, s.grafana} {
		wg.Go(func() {
			before := p.state().State
			if u := p.probe(ctx); u.State != before {
				s.log.InfoContext(ctx, "linked UI", "name", u.Name, "state", u.State, "probed", u.Probed, "detail", u.Detail)
			}
		})
	}
	wg.Wait()
}

// watchLinks re-probes every interval, so a Grafana started (or stopped) after the
// dashboard shows (or loses) its links within that time; the pages read the result.
func (s *server) watchLinks(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		s.probeLinks(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
