package e2e

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"

	"microlab/exercises"
	"microlab/internal/testbrowser"
	"microlab/lab/stack"
)

// TestExerciseWalkInBrowser walks 07-outbox in real Chromium against a whole real lab,
// as a new learner does, through the UI only: the exercise stays open in one tab while
// the learner works in another (the Switchboard, the Shop), and each step ticks on the
// exercise page by itself, without a reload, with its evidence. On the way: the home
// page's "Start here" to the list (each exercise with its progress, level, minutes and
// prerequisites), a hint (revealed and counted), an evidence link followed to the
// order's saga and to the right trace, a reload that keeps the progress, a wrong
// answer refused with its hint inline and the right one ticking the step, "show me"
// running a reference solution where the learner watches, and reset putting the
// Switchboard back as it was before the start. Screenshots: the list, the exercise in
// progress, the exercise completed.
func TestExerciseWalkInBrowser(t *testing.T) {
	t.Parallel()
	const id = "07-outbox"
	ex := builtinExercise(t, id)
	list, err := exercises.Load(exercises.Builtin())
	if err != nil {
		t.Fatal(err)
	}

	page := newBrowser(t)                       // the exercise, open all along
	work := &browser{page.Tab()}                // the learner's other tab: the Switchboard, the Shop
	l := startLab(t, labOptions{tracing: true}) // span checks read the traces the dashboard receives
	d, _ := stack.Find(stack.Dashboard)
	dash := l.cfg.URL(d)

	step := func(s string) string { return `[data-testid=step][data-step="` + s + `"]` }
	js := func(format string, args ...any) string { return fmt.Sprintf(format, args...) }
	stateIs := func(s, state string) string {
		return js(`document.querySelector(%q).dataset.state === %q`, step(s), state)
	}
	// live proves the page was not reloaded since markLive: a step ticking by itself.
	markLive := func() {
		testbrowser.Get(page.Browser, "mark the page", chromedp.Evaluate[bool](`window.walkLive = true`))
	}
	live := func(what string) {
		t.Helper()
		if !testbrowser.Get(page.Browser, "is the page the same", chromedp.Evaluate[bool](`window.walkLive === true`)) {
			t.Fatalf("%s: the exercise page was reloaded, it did not tick live", what)
		}
	}
	evidence := func(s string) []string {
		return testbrowser.Get(page.Browser, "read the evidence of "+s, chromedp.Evaluate[[]string](
			js(`[...document.querySelectorAll('%s [data-testid=evidence-link]')].map(a => a.getAttribute('href'))`, step(s))))
	}

	// 0. The learner has played with the Switchboard before: what reset must put back.
	work.Do("open the switchboard", chromedp.Navigate(dash+"/switchboard"), chromedp.WaitVisible(`[data-testid=settings]`))
	work.setSetting("saga.mode", "orchestration")
	work.addFault("catalog", "latency", "100ms", "http")
	before := work.switchboardState(dash)
	if !strings.Contains(before, "saga.mode=orchestration") || !strings.Contains(before, "catalog latency") {
		t.Fatalf("the switchboard before the exercise: %s", before)
	}

	// 1. Home → "Start here" → the list.
	page.Do("open the home page and follow start here", chromedp.Navigate(dash+"/"),
		chromedp.Click(`[data-testid=start-here-link]`), chromedp.WaitVisible(`[data-testid=exercise-list]`))
	type row struct {
		ID, Progress, Level, Minutes string
		Prereqs                      []string
	}
	rows := testbrowser.Get(page.Browser, "read the list", chromedp.Evaluate[[]row](
		`[...document.querySelectorAll('[data-testid=exercise-item]')].map(r => ({
		  ID: r.dataset.id,
		  Progress: r.querySelector('[data-testid=exercise-progress]').textContent.trim(),
		  Level: r.querySelector('.badge').textContent.trim(),
		  Minutes: r.querySelector('td.num').textContent.trim(),
		  Prereqs: [...r.cells[4].querySelectorAll('a')].map(a => a.textContent.trim()),
		}))`))
	if len(rows) != len(list) {
		t.Fatalf("the list shows %d exercises, %d are built in: %+v", len(rows), len(list), rows)
	}
	for i, e := range list {
		r := rows[i]
		want := row{ID: e.ID, Progress: "not started", Level: e.Level, Minutes: strconv.Itoa(e.Minutes),
			Prereqs: append([]string{}, e.Prerequisites...)}
		if fmt.Sprintf("%q", r) != fmt.Sprintf("%q", want) {
			t.Errorf("the list's row %d is %+v, want %+v", i, r, want)
		}
	}
	page.Screenshot("exercise-walk-list")

	// 2. The exercise, started.
	page.Do("open "+id, chromedp.Click(`[data-testid=exercise-item][data-id="`+id+`"] [data-testid=exercise-link]`),
		chromedp.WaitVisible(`[data-testid=readme]`))
	page.WaitJS("the page's live connection", `document.querySelector('[data-testid=ws-state]').dataset.state === 'open'`)
	page.Do("start it", chromedp.Click(`[data-testid=exercise-start]`))
	page.WaitJS("started", `document.querySelector('[data-testid=exercise]').dataset.state === 'open' &&
		document.querySelector('[data-testid=exercise-status]').textContent === 'in progress' && `+stateIs("switch-the-outbox-off", "current"))
	markLive()
	// The steps read one below the other, in order, whole (they once shared the
	// saga timeline's class and ran in two columns, a step broken across both).
	if !testbrowser.Get(page.Browser, "lay out the steps", chromedp.Evaluate[bool](`(() => {
		const ol = document.querySelector('[data-testid=steps]');
		const lefts = [...ol.querySelectorAll('[data-testid=step]')].map(li => li.getBoundingClientRect().left);
		return getComputedStyle(ol).columnCount === 'auto' && lefts.every(x => x === lefts[0]) })()`)) {
		t.Error("the exercise's steps are not laid out one below the other")
	}
	// linkIn is where a link in a step's instructions leads: the learner opens it in
	// the other tab.
	linkIn := func(s, text string) string {
		t.Helper()
		href := testbrowser.Get(page.Browser, "read the "+text+" link of "+s, chromedp.Evaluate[string](js(
			`(() => { const a = [...document.querySelectorAll('%s [data-testid=step-instructions] a')].find(a => a.textContent === %q);
			  return a ? a.getAttribute('href') : '' })()`, step(s), text)))
		if !strings.HasPrefix(href, "/") {
			t.Fatalf("step %s's %s link is %q: not the dashboard serving this page", s, text, href)
		}
		return dash + href
	}

	// 3. Step 1 on the Switchboard: outbox.enabled off.
	work.Do("open the switchboard from step 1", chromedp.Navigate(linkIn("switch-the-outbox-off", "Switchboard")),
		chromedp.WaitVisible(`[data-testid=settings]`))
	if s := work.switchboardState(dash); !strings.Contains(s, "saga.mode=choreography") || strings.Contains(s, "catalog latency") {
		t.Errorf("after start the switchboard shows %s: not the exercise's setup", s)
	}
	work.setSetting("outbox.enabled", "false")
	page.WaitJS("step 1 ticks", stateIs("switch-the-outbox-off", "done"))
	live("step 1")
	if ev := evidence("switch-the-outbox-off"); len(ev) != 1 || ev[0] != "/switchboard" {
		t.Errorf("step 1's evidence links: %v, want the switchboard", ev)
	}

	// 4. Step 2 on the Switchboard: crash_after_commit on payments.
	work.addFault("payments", "crash_after_commit", "", "")
	page.WaitJS("step 2 ticks", stateIs("arm-the-crash", "done"))
	live("step 2")

	// 5. Step 3 in the Shop: an order lost to the dual write; a hint while it waits.
	if shop := linkIn("lose-an-event", "Shop"); shop != dash+"/shop" {
		t.Errorf("step 3's Shop link leads to %s", shop)
	}
	lost, _ := work.shopOrder(dash, skuOK, "ok", "DE", "pending")
	page.Do("ask for a hint", chromedp.Click(step("lose-an-event")+` [data-testid=step-hint]`))
	page.WaitJS("the hint revealed and counted", js(`(() => { const li = document.querySelector(%q);
		return li.querySelectorAll('[data-testid=step-hints] li').length === 1 &&
		  li.querySelector('[data-testid=step-hints] li').textContent === %q &&
		  li.querySelector('[data-testid=step-hint]').textContent === 'hint (1 of 2)' })()`,
		step("lose-an-event"), ex.Steps[2].Hints[0]))
	// The second, the last: Markdown like the instructions (a `code` span, not backticks).
	page.Do("ask for another", chromedp.Click(step("lose-an-event")+` [data-testid=step-hint]`))
	page.WaitJS("the last hint revealed, rendered, and no more offered", js(`(() => { const li = document.querySelector(%q);
		const hints = li.querySelectorAll('[data-testid=step-hints] li'), btn = li.querySelector('[data-testid=step-hint]');
		return hints.length === 2 && hints[1].querySelector('code') && hints[1].querySelector('code').textContent === 'process order.placed' &&
		  !hints[1].textContent.includes('`+"`"+`') && btn.textContent === 'hint (2 of 2)' && btn.disabled })()`, step("lose-an-event")))
	page.WaitJS("step 3 ticks (the order held pending for 20 s)", stateIs("lose-an-event", "done"))
	live("step 3")
	if ev := evidence("lose-an-event"); len(ev) == 0 || !slices.Contains(ev, "/sagas?order="+lost) {
		t.Errorf("step 3's evidence links %v name no saga of order %s", ev, lost)
	}
	labels := testbrowser.Get(page.Browser, "read step 3's evidence", chromedp.Text(step("lose-an-event")+` [data-testid=step-evidence]`))
	if !strings.Contains(labels, "order "+lost[:8]+"…") || strings.Contains(labels, "order of order") {
		t.Errorf("step 3's evidence reads %q", labels)
	}
	page.Screenshot("exercise-walk-in-progress")
	// The README names Grafana's compose address; the native lab has no Grafana, so it
	// is no link here.
	page.noUILinks("the exercise page")

	// 6. Step 4 by "show me": the learner watches the reference solution run.
	page.Do("show me step 4", chromedp.Click(step("switch-the-outbox-on")+` [data-testid=step-solve]`))
	page.WaitJS("the solve log fills and the step ticks", js(`(() => { const li = document.querySelector(%q);
		const acts = [...li.querySelectorAll('[data-testid=step-solve-log] [data-testid=solve-action]')];
		return li.dataset.state === 'done' && acts.length === %d && acts.every(a => a.dataset.state === 'done') &&
		  !!li.querySelector('[data-testid=solve-done]') })()`, step("switch-the-outbox-on"), len(ex.Steps[3].Solution)))
	live("step 4")

	// 7. Step 5 in the Shop: the same crash, survived thanks to the outbox.
	survived, traceHref := work.shopOrder(dash, skuOK, "ok", "DE", "confirmed")
	page.WaitJS("step 5 ticks", stateIs("survive-the-crash", "done"))
	live("step 5")

	// 8. Evidence links lead to the right saga and the right trace.
	page.Do("follow step 3's saga link", chromedp.Click(step("lose-an-event")+` [data-testid=evidence-link][href^="/sagas"]`),
		chromedp.WaitVisible(`[data-testid=saga-filters]`))
	page.WaitJS("the saga of the lost order", js(`(() => { const s = [...document.querySelectorAll('[data-testid=saga]')];
		return s.length === 1 && s[0].dataset.orderId === %q })()`, lost))
	page.Do("back to the exercise", chromedp.Navigate(dash+"/exercises/"+id), chromedp.WaitVisible(`[data-testid=readme]`))
	page.Do("follow step 5's trace link", chromedp.Click(step("survive-the-crash")+` [data-testid=evidence-link][href^="/traces/"]`),
		chromedp.WaitVisible(`[data-testid=trace]`))
	wantTrace := strings.TrimPrefix(traceHref, "/traces/")
	page.WaitJS("the trace of the order that survived", js(
		`document.querySelector('[data-testid=trace]') && document.querySelector('[data-testid=trace]').dataset.traceId === %q`, wantTrace))
	if wantTrace == "" || wantTrace == traceHref {
		t.Errorf("the shop's trace link of order %s is %q", survived, traceHref)
	}
	page.Do("back to the exercise", chromedp.Navigate(dash+"/exercises/"+id), chromedp.WaitVisible(`[data-testid=readme]`))

	// 9. A reload keeps the progress, the hint and the evidence.
	page.Do("reload", chromedp.Reload(), chromedp.WaitVisible(`[data-testid=readme]`))
	for _, s := range ex.Steps[:5] {
		page.WaitJS(s.ID+" still done with its evidence", stateIs(s.ID, "done")+
			js(` && document.querySelectorAll('%s [data-testid=evidence-link]').length > 0`, step(s.ID)))
	}
	page.WaitJS("the hints still shown, rendered", js(`document.querySelectorAll('%s [data-testid=step-hints] li').length === 2 &&
		!!document.querySelector('%s [data-testid=step-hints] li code')`, step("lose-an-event"), step("lose-an-event")))
	page.WaitJS("step 6 current", stateIs("explain-it", "current"))
	markLive()

	// 10. The answer box: a wrong answer refused with its hint, then the right one.
	q := ex.Steps[5].Question()
	choose := func(answer string) {
		page.Do("answer "+answer, chromedp.Evaluate[chromedp.Void](js(`[...document.querySelectorAll('%s input[name=answer]')].find(i => i.value === %q).click()`,
			step("explain-it"), answer)), chromedp.Click(step("explain-it")+` [data-testid=answer-submit]`))
	}
	choose(q.Choices[0])
	page.WaitJS("the wrong answer's hint inline, rendered", js(`(() => { const fb = document.querySelector('%s [data-testid=answer-feedback]');
		return !fb.hidden && fb.textContent.includes(%q) && !!fb.querySelector('code') })()`,
		step("explain-it"), strings.ReplaceAll(strings.TrimSpace(q.Wrong), "`", "")))
	if !testbrowser.Get(page.Browser, "step 6 still current", chromedp.Evaluate[bool](stateIs("explain-it", "current"))) {
		t.Fatal("a wrong answer ticked step 6")
	}
	choose(q.Expect.Text)
	page.WaitJS("the right answer ticks step 6 and completes the exercise", stateIs("explain-it", "done")+
		` && document.querySelector('[data-testid=exercise]').dataset.state === 'completed'
		  && document.querySelector('[data-testid=exercise-status]').textContent === 'completed: well done'`)
	live("step 6")
	page.Screenshot("exercise-walk-completed")

	// 11. Reset: the progress cleared, the Switchboard as it was before the start.
	page.Do("reset", chromedp.Click(`[data-testid=exercise-reset]`))
	page.WaitJS("the progress cleared", `document.querySelector('[data-testid=exercise]').dataset.state === '' &&
		[...document.querySelectorAll('[data-testid=step]')].every(s => s.dataset.state === 'locked') &&
		document.querySelectorAll('[data-testid=evidence-link], [data-testid=step-hints] li, [data-testid=solve-action]').length === 0`)
	// Nor is the last run's answer left in the form for the next: no "Right.", no choice ticked.
	page.WaitJS("the answer forgotten", `document.querySelectorAll('[data-testid=answer-feedback]:not([hidden]), input[name=answer]:checked').length === 0`)
	page.Do("back to the list", chromedp.Click(`a[href="/exercises"]`), chromedp.WaitVisible(`[data-testid=exercise-list]`))
	if p := testbrowser.Get(page.Browser, "read its progress", chromedp.Text(`[data-testid=exercise-item][data-id="`+id+`"] [data-testid=exercise-progress]`)); strings.TrimSpace(p) != "not started" {
		t.Errorf("after reset the list shows %s as %q", id, p)
	}
	if after := work.switchboardState(dash); after != before {
		t.Errorf("after reset the switchboard shows\n  %s\nbefore the start it showed\n  %s", after, before)
	}
	if errs := page.ConsoleErrors(); len(errs) > 0 {
		t.Errorf("console errors:\n  %s", strings.Join(errs, "\n  "))
	}
}

func builtinExercise(t *testing.T, id string) *exercises.Exercise {
	t.Helper()
	list, err := exercises.Load(exercises.Builtin())
	if err != nil {
		t.Fatal(err)
	}
	for i := range list {
		if list[i].ID == id {
			return &list[i]
		}
	}
	t.Fatalf("no built-in exercise %s", id)
	return nil
}

// setSetting changes a setting on the Switchboard (open in b) and waits until it shows.
func (b *browser) setSetting(key, value string) {
	b.T.Helper()
	form := `[data-testid=setting-form][data-key="` + key + `"]`
	b.Do("set "+key+" on the switchboard", chromedp.SetValue(form+` [data-testid=setting-input]`, value),
		chromedp.Click(form+` [data-testid=setting-apply]`))
	b.WaitJS(key+" shown as "+value, fmt.Sprintf(
		`document.querySelector('tr[data-key=%q] [data-testid=setting-value]').textContent.trim() === %q`, key, value))
}

// addFault injects a fault with the Switchboard's form (open in b) and waits until it
// is listed.
func (b *browser) addFault(service, kind, value, on string) {
	b.T.Helper()
	// What a learner picks and types; an empty field (a select's "default") is cleared.
	fill := fmt.Sprintf(`(() => { const f = document.querySelector('[data-testid=fault-form]').elements;
		f.service.value = %q; f.kind.value = %q; f.value.value = %q; f.on.value = %q;
		return f.service.value === %q && f.kind.value === %q })()`, service, kind, value, on, service, kind)
	if !testbrowser.Get(b.Browser, "fill the fault form", chromedp.Evaluate[bool](fill)) {
		b.T.Fatalf("the fault form offers no %s on %s", kind, service)
	}
	b.Do("inject "+kind+" on "+service, chromedp.Click(`[data-testid=fault-add]`))
	b.WaitJS(kind+" on "+service+" listed", fmt.Sprintf(
		`[...document.querySelectorAll('[data-testid=fault]')].some(r => r.dataset.target === %q && r.textContent.includes(%q))`, service, kind))
}

// switchboardState opens the Switchboard and reads what it shows: every setting's
// value and every fault in force (target and what it does, not its time left nor who
// made it).
func (b *browser) switchboardState(dash string) string {
	b.T.Helper()
	b.Do("open the switchboard", chromedp.Navigate(dash+"/switchboard"), chromedp.WaitVisible(`[data-testid=settings]`))
	return testbrowser.Get(b.Browser, "read the switchboard", chromedp.Evaluate[string](
		`[...document.querySelectorAll('[data-testid=settings] tr[data-key]')].map(r =>
		   r.dataset.key + '=' + r.querySelector('[data-testid=setting-value]').textContent.trim())
		 .concat([...document.querySelectorAll('[data-testid=fault]')].map(r =>
		   'fault ' + r.dataset.target + ' ' + r.children[1].textContent.trim()).sort()).join('; ')`))
}
