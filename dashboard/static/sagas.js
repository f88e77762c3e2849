// sagas.js — saga timelines, updated by "saga" messages (the whole saga each time).
import { connect, on, h, fmtDur, clock } from './ws.js';

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
      h('a', { href: `/events?correlation=${encodeURIComponent(s.orderId)}` }, 'events')),
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

connect();
