// exercises.js — the Exercises view. The list keeps each exercise's progress fresh
// (GET /api/lab/exercises). An exercise's page asks GET /api/lab/exercises/{id} every
// second and a half — the engine evaluates the current step's check on each ask, so a
// step ticks itself off while the learner works in another tab — and redraws the
// steps: done (with links to the evidence), current (what is still missing, hints, the
// answer box, "show me"), locked. The buttons POST to the same API; a refusal shows the
// server's one-line message next to what was clicked.
import { connect, on, h, postJSON, errorText } from './ws.js';

const POLL_MS = 1500;

function showText(el, text, cls) {
  if (!el) return;
  el.textContent = text || '';
  el.hidden = !text;
  if (cls !== undefined) el.className = cls;
}

// Hints, what is missing and the hint after a wrong answer are Markdown, rendered by the
// server as the instructions are (its renderer drops raw HTML): set as HTML, not text.
function html(el, markup) {
  el.innerHTML = markup || '';
  return el;
}

function showHTML(el, markup, cls) {
  if (!el) return;
  html(el, markup);
  el.hidden = !markup;
  if (cls !== undefined) el.className = cls;
}

// --- the list ---

const PROGRESS = { completed: 'completed', open: null, '': 'not started' };

async function refreshList() {
  let res;
  try { res = await fetch('/api/lab/exercises'); } catch { return; }
  if (!res.ok) return;
  const { items } = await res.json();
  for (const e of items || []) {
    const row = document.querySelector(`[data-testid="exercise-item"][data-id="${CSS.escape(e.id)}"]`);
    if (!row) continue;
    const state = e.state || '';
    row.dataset.state = state;
    const cell = row.querySelector('[data-testid="exercise-progress"]');
    cell.textContent = PROGRESS[state] ?? `${e.done} of ${e.steps} steps`;
    cell.classList.toggle('ok', state === 'completed');
  }
}

// --- one exercise ---

const page = document.querySelector('[data-testid="exercise"]');
const id = page ? page.dataset.id : '';
const api = `/api/lab/exercises/${encodeURIComponent(id)}`;
const MARK = { done: '✓', current: '→', locked: '·' };
const STATUS = { open: 'in progress', completed: 'completed: well done', '': 'not started: start it to switch the lab to its starting point' };

function stepEl(step) {
  return page.querySelector(`[data-testid="step"][data-step="${CSS.escape(step)}"]`);
}

// The answer a learner is typing is theirs: a redraw never touches the form's inputs.
function drawStep(s) {
  const li = stepEl(s.id);
  if (!li) return;
  li.dataset.state = s.state;
  li.className = `step ${s.state}`;
  li.querySelector('[data-testid="step-state"]').textContent = MARK[s.state] || '·';
  const ev = li.querySelector('[data-testid="step-evidence"]');
  ev.replaceChildren(...(s.evidence || []).map((e) => h('li', {},
    e.href ? h('a', { href: e.href, 'data-testid': 'evidence-link' }, e.label) : e.label)));
  showHTML(li.querySelector('[data-testid="step-missing"]'), s.state === 'current' ? s.missingHTML : '');
  const hints = li.querySelector('[data-testid="step-hints"]');
  const shown = s.hintsHTML || [];
  if (hints.children.length !== shown.length) hints.replaceChildren(...shown.map((t) => html(h('li', {}), t)));
  const actions = li.querySelector('[data-testid="step-actions"]');
  actions.hidden = s.state !== 'current';
  const hint = li.querySelector('[data-testid="step-hint"]');
  if (hint) {
    hint.textContent = `hint (${(s.hints || []).length} of ${s.hintsTotal})`;
    hint.disabled = (s.hints || []).length >= s.hintsTotal;
  }
  const form = li.querySelector('[data-testid="step-answer"]');
  if (form) form.hidden = s.state !== 'current';
}

function drawSolving(sv) {
  for (const log of page.querySelectorAll('[data-testid="step-solve-log"]')) {
    const li = log.closest('[data-testid="step"]');
    if (!sv || li.dataset.step !== sv.step) { log.replaceChildren(); continue; }
    const rows = (sv.actions || []).map((a) => h('li', { 'data-testid': 'solve-action', 'data-state': a.state },
      `${a.state === 'done' ? '✓' : a.state === 'failed' ? '✗' : '…'} ${a.action}`, a.error ? ` — ${a.error}` : ''));
    if (sv.running) rows.push(h('li', { 'data-testid': 'solve-running' }, 'running the reference solution…'));
    else if (sv.error) rows.push(h('li', { class: 'bad', 'data-testid': 'solve-error' }, sv.error));
    else rows.push(h('li', { 'data-testid': 'solve-done' }, 'the reference solution ran: see what it changed'));
    log.replaceChildren(...rows);
    const btn = li.querySelector('[data-testid="step-solve"]');
    if (btn) btn.disabled = !!sv.running;
  }
}

// What was picked, typed, answered or refused belongs to one run: when the run changes
// (reset, start again — here, in another tab or from `lab exercise`), it goes, so that
// a new run's question does not open already answered ("Right.", the choice ticked).
let runID;
function forgetRun() {
  for (const form of page.querySelectorAll('[data-testid="step-answer"]')) {
    form.reset();
    showText(form.querySelector('[data-testid="answer-feedback"]'), '');
  }
  for (const el of page.querySelectorAll('[data-testid="step-error"]')) showText(el, '');
}

function draw(d) {
  const run = d.status && d.status.run ? d.status.run.id : null;
  if (runID !== undefined && run !== runID) forgetRun();
  runID = run;
  const state = d.state || '';
  page.dataset.state = state;
  page.querySelector('[data-testid="exercise-status"]').textContent = STATUS[state] ?? state;
  page.querySelector('[data-testid="exercise-start"]').textContent = state ? 'start again' : 'start';
  page.querySelector('[data-testid="exercise-reset"]').disabled = !state;
  const reveal = page.querySelector('[data-testid="exercise-reveal"]');
  if (reveal) reveal.disabled = state !== 'open';
  for (const s of d.steps || []) drawStep(s);
  drawSolving(d.solving);
}

// One GET at a time; a refresh asked for while one is under way (after a click, while
// a poll is out) asks again once it is back: that answer predates the click, and
// drawing it alone left the page behind — a hint not shown, its button enabled
// again — until the next poll.
let busy = false;
let again = false;
async function refresh() {
  if (busy) { again = true; return; }
  busy = true;
  try {
    do {
      again = false;
      const res = await fetch(api);
      if (res.ok) draw(await res.json());
    } while (again);
  } catch { /* the next poll tries again */ } finally { busy = false; }
}

async function act(url, body, errEl) {
  const r = await postJSON(url, body);
  showText(errEl, r.ok ? '' : errorText(r));
  if (r.ok) await refresh();
  return r;
}

function bindExercise() {
  const pageErr = page.querySelector('[data-testid="exercise-error"]');
  page.addEventListener('click', async (ev) => {
    const btn = ev.target.closest('button');
    if (!btn || btn.type === 'submit') return;
    const li = btn.closest('[data-testid="step"]');
    const stepErr = li && li.querySelector('[data-testid="step-error"]');
    btn.disabled = true;
    try {
      switch (btn.dataset.testid) {
        case 'exercise-start':
          showText(page.querySelector('[data-testid="exercise-revealed"]'), '');
          await act(`${api}/start`, undefined, pageErr);
          break;
        case 'exercise-reset':
          showText(page.querySelector('[data-testid="exercise-revealed"]'), '');
          await act(`${api}/reset`, undefined, pageErr);
          break;
        case 'exercise-reveal': {
          const r = await act(`${api}/reveal`, undefined, pageErr);
          if (r.ok) {
            const faults = (r.data.faults || []).map((f) => `${f.target}: ${f.text}`).join('; ');
            showText(page.querySelector('[data-testid="exercise-revealed"]'), `The hidden fault: ${faults || 'gone already'}`);
          }
          break;
        }
        case 'step-hint':
          await act(`${api}/steps/${encodeURIComponent(btn.dataset.step)}/hint`, undefined, stepErr);
          break;
        case 'step-solve':
          await act(`${api}/solve`, undefined, stepErr);
          break;
      }
    } finally {
      btn.disabled = false;
      refresh();
    }
  });
  page.addEventListener('submit', async (ev) => {
    const form = ev.target.closest('[data-testid="step-answer"]');
    if (!form) return;
    ev.preventDefault();
    const fb = form.querySelector('[data-testid="answer-feedback"]');
    const field = form.elements.answer;
    const answer = (field && (field.value ?? '')).trim();
    if (!answer) { showText(fb, 'Pick or type an answer first.', 'notice bad'); return; }
    const r = await postJSON(`${api}/steps/${encodeURIComponent(form.dataset.step)}/answer`, { answer });
    if (!r.ok) { showText(fb, errorText(r), 'notice bad'); return; }
    if (r.data.right) showText(fb, 'Right.', 'notice ok');
    else showHTML(fb, `Not quite. ${r.data.hintHTML || ''}`.trim(), 'notice bad');
    refresh();
  });
  // "show me" reports each action as it runs: redraw at once rather than at the next poll.
  on('exercise.solve', (d) => { if (d && d.exercise === id) refresh(); });
  setInterval(refresh, POLL_MS);
}

connect();
if (page) bindExercise();
else setInterval(refreshList, 3000);
