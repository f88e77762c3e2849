// sagas.js — saga timelines, updated by "saga" messages (the whole saga each time);
// one order's event stream, whose versions swap in the state at that version
// (GET /sagas/{id}/events?version=N, drawn by the server); and the rebuild button,
// which starts a rebuild of the order history read model and polls its job until it
// has ended.
import { connect, on, h, fmtDur, clock, postJSON, errorText } from './ws.js';

const list = document.querySelector('[data-testid="saga-list"]');
const params = new URLSearchParams(location.search);
const want = { outcome: params.get('outcome') || '', mode: params.get('mode') || '', order: params.get('order') || '' };
const MAX_CARDS = 100;

function outcomeClass(o) { return o === 'confirmed' ? 'ok' : o === 'cancelled' ? 'bad' : 'warn'; }

function card(s) {
  const steps = s.steps || [];
  const span = Math.max(0, ...steps.map((st) => st.sinceStartNs));
  const cls = (st) => (st.compensation ? 'compensation' : st.failed ? 'failed' : 'step');
  const title = (st) => `+${fmtDur(st.sinceStartNs)} ${st.event} (${st.service})${st.reason ? ': ' + st.reason : ''}`;
  return h('article', { class: `saga ${s.outcome}`, 'data-testid': 'saga', 'data-order-id': s.orderId, 'data-outcome': s.outcome, 'data-mode': s.mode },
    h('header', {},
      h('code', {}, s.orderId), ' ',
      h('span', { class: 'badge', 'data-testid': 'saga-mode' }, s.mode), ' ',
      h('span', { class: `badge ${outcomeClass(s.outcome)}`, 'data-testid': 'saga-outcome' }, s.outcome), ' ',
      s.reason ? h('span', { class: 'reason', 'data-testid': 'saga-reason' }, s.reason) : null, ' ',
      h('span', { class: 'meta' }, `${clock(s.start)} · ${fmtDur(span)}`), ' ',
      s.traceId ? h('a', { href: `/traces/${encodeURIComponent(s.traceId)}`, 'data-testid': 'saga-trace' }, 'trace') : null, ' ',
      h('a', { href: `/events?correlation=${encodeURIComponent(s.orderId)}` }, 'events'), ' ',
      h('a', { href: `/sagas?order=${encodeURIComponent(s.orderId)}#event-stream`, 'data-testid': 'saga-stream' }, 'event stream')),
    h('div', { class: 'timeline', 'data-testid': 'saga-timeline' },
      steps.map((st) => h('span', {
        class: `saga-step ${cls(st)}`, 'data-testid': 'saga-step', 'data-event': st.event, 'data-class': cls(st),
        style: `left:${span > 0 ? (100 * st.sinceStartNs / span).toFixed(3) : 0}%`, title: title(st),
      }))),
    h('ol', { class: 'steps' }, steps.map((st) => h('li', { class: cls(st) },
      `+${fmtDur(st.sinceStartNs)} `, h('strong', {}, st.event), ` (${st.service})`, st.reason ? ` — ${st.reason}` : ''))));
}

on('saga', (s) => {
  if (!s || !list) return;
  if ((want.outcome && s.outcome !== want.outcome) || (want.mode && s.mode !== want.mode) || (want.order && s.orderId !== want.order)) {
    list.querySelector(`[data-order-id="${CSS.escape(s.orderId)}"]`)?.remove();
    return;
  }
  const old = list.querySelector(`[data-order-id="${CSS.escape(s.orderId)}"]`);
  if (old) old.replaceWith(card(s)); else list.prepend(card(s));
  while (list.children.length > MAX_CARDS) list.lastElementChild.remove();
  document.querySelector('[data-testid="saga-empty"]')?.remove();
});

// A version picked in the event stream: the section drawn again for it, in place (the
// link's own page, without JS). Only the newest pick is drawn.
let picked = 0;
document.addEventListener('click', async (ev) => {
  const a = ev.target.closest('[data-testid="stream-version"]');
  const section = a && a.closest('[data-testid="event-stream"]');
  if (!section) return;
  ev.preventDefault();
  const mine = ++picked;
  const url = `/sagas/${encodeURIComponent(section.dataset.orderId)}/events?version=${encodeURIComponent(a.dataset.version)}`;
  let text;
  try {
    const res = await fetch(url);
    if (!res.ok) { location.href = a.href; return; }
    text = await res.text();
  } catch { location.href = a.href; return; }
  if (mine !== picked) return;
  const fresh = new DOMParser().parseFromString(text, 'text/html').querySelector('[data-testid="event-stream"]');
  const old = document.querySelector('[data-testid="event-stream"]');
  if (fresh && old) old.replaceWith(document.importNode(fresh, true));
  history.replaceState(null, '', a.href);
});

// The rebuild: POST starts a job (409 while one runs: said inline), then its progress
// is read every 300 ms until it has completed or failed.
const rebuild = document.querySelector('[data-testid="rebuild"]');
if (rebuild) {
  const button = rebuild.querySelector('[data-testid="rebuild-button"]');
  const status = rebuild.querySelector('[data-testid="rebuild-status"]');
  const base = `/api/lab/projections/${encodeURIComponent(rebuild.dataset.projection)}/rebuild`;
  const show = (state, text) => { status.dataset.state = state; status.textContent = text; };
  const progress = (j) => `${j.projection}: ${j.status}, ${j.done} of ${j.total} orders replayed`;
  button.addEventListener('click', async () => {
    button.disabled = true;
    try {
      const r = await postJSON(base);
      if (!r.ok) {
        show(r.status === 409 ? 'conflict' : 'error', errorText(r));
        return;
      }
      let job = r.data;
      show(job.status, progress(job));
      while (job.status === 'running') {
        await new Promise((ok) => setTimeout(ok, 300));
        let res;
        try { res = await fetch(`${base}/${encodeURIComponent(job.jobId)}`); } catch (err) { show('error', String(err)); return; }
        let data = null;
        try { data = await res.json(); } catch { /* not JSON */ }
        if (!res.ok) { show('error', errorText({ status: res.status, data })); return; }
        job = data;
        show(job.status, progress(job));
      }
      if (job.status === 'failed') show('failed', `${progress(job)}: ${job.error || 'failed'}`);
    } finally {
      button.disabled = false;
    }
  });
}

connect();
