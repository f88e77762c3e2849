package main

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/chromedp/cdproto/fetch"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"

	"microlab/exercises"
	"microlab/internal/testbrowser"
)

// A click while the exercise page's GET is out (the engine evaluates the step's check
// on every GET, so it is out a good part of the time) is drawn as soon as that GET is
// back, not at the next poll: the answer in flight predates the click. In the real
// Chromium, against the real dashboard (run): the page's poll is slowed down (what is
// drawn soon after the click can only be the click's own refresh), a poll's GET is
// held in the browser until the hint has been revealed, then let go; the hint must
// show at once, and its button (the last hint given) stay disabled. Before, the page
// drew the old answer alone, without the hint and with the button enabled, until the
// next poll.
func TestExercisePageDrawsAClickDuringAGet(t *testing.T) {
	t.Parallel()
	b := newBrowser(t)
	base, stop := exerciseDashboard(t, "t_dpl_")
	defer stop()
	const step = `[data-testid=step][data-step="switch-the-outbox-off"]`

	// The page's 1.5 s poll every 5 s instead: the poll after the held one comes seconds
	// after the click, the click's own refresh at once.
	if _, err := chromedp.Call(b.Ctx, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{
		Source: `{ const si = window.setInterval; window.setInterval = (f, ms, ...a) => si(f, ms === 1500 ? 5000 : ms, ...a); }`,
	}); err != nil {
		t.Fatal(err)
	}
	b.Do("open 07-outbox", chromedp.Navigate(base+"/exercises/07-outbox"), chromedp.WaitVisible(`[data-testid=readme]`))
	b.Do("start it", chromedp.Click(`[data-testid=exercise-start]`))
	b.WaitJS("step 1 current", `document.querySelector('`+step+`').dataset.state === 'current'`)
	time.Sleep(500 * time.Millisecond) // the start's own refreshes are back

	// From now on the exercise's GET answers are held in the browser: the first until
	// let go, the others passed on at once.
	paused := make(chan fetch.RequestID, 16)
	chromedp.Listen(b.Ctx, func(ev any) {
		if e, ok := ev.(*fetch.EventRequestPaused); ok {
			paused <- e.RequestID
		}
	})
	if _, err := chromedp.Call(b.Ctx, fetch.Enable, fetch.EnableParams{Patterns: []*fetch.RequestPattern{
		{URLPattern: "*/api/lab/exercises/07-outbox", RequestStage: fetch.RequestStageResponse}}}); err != nil {
		t.Fatal(err)
	}
	let := func(id fetch.RequestID) {
		if _, err := chromedp.Call(b.Ctx, fetch.ContinueRequest, fetch.ContinueRequestParams{RequestID: id}); err != nil {
			t.Errorf("let the GET go: %v", err)
		}
	}
	// The next poll's GET is the one held.
	var held fetch.RequestID
	select {
	case held = <-paused:
	case <-time.After(30 * time.Second):
		t.Fatal("the page's poll never came")
	}
	b.Do("ask for the hint while the GET is out", chromedp.Click(step+` [data-testid=step-hint]`))
	// The hint is revealed (the server says so) before the held answer is let go.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		code, body := getJSON(t, ctx, base+"/api/lab/exercises/07-outbox")
		if code == 200 && len(body.Steps) > 0 && len(body.Steps[0].Hints) == 1 {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("the hint was never revealed: %d %+v", code, body)
		}
		time.Sleep(50 * time.Millisecond)
	}
	let(held)
	go func() {
		for {
			select {
			case id := <-paused:
				if _, err := chromedp.Call(b.Ctx, fetch.ContinueRequest, fetch.ContinueRequestParams{RequestID: id}); err != nil {
					return
				}
			case <-ctx.Done():
				return
			}
		}
	}()
	// At once, not at the next poll (about 5 s after the held one): the click's own
	// refresh, after the held GET.
	deadline := time.Now().Add(2 * time.Second)
	for {
		ok := testbrowserBool(b, `(() => { const li = document.querySelector('`+step+`');
			const btn = li.querySelector('[data-testid=step-hint]');
			return li.querySelectorAll('[data-testid=step-hints] li').length === 1 && btn.disabled && btn.textContent === 'hint (1 of 1)' })()`)
		if ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the hint revealed while a GET was out is not drawn (or its button is enabled again) until the next poll")
		}
		time.Sleep(100 * time.Millisecond)
	}
	cancel()
}

// getJSON is GET url decoded as the exercise API answers, as far as this test reads it.
func getJSON(t *testing.T, ctx context.Context, url string) (int, exercises.View) {
	t.Helper()
	var out exercises.View
	req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, out
	}
	defer resp.Body.Close()
	_ = json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}

func testbrowserBool(b *browser, expr string) bool {
	b.T.Helper()
	return testbrowser.Get(b.Browser, "read the page", chromedp.Evaluate[bool](expr))
}
