// events.js — the wiretap's live stream ("event" messages), payloads on click, the
// correlation filter, and the DLQ actions.
import { connect, on, h, clock, serviceColor, postJSON, errorText } from './ws.js';

const MAX_ROWS = 500;
const tbody = document.querySelector('[data-testid="event-list"]');
const payload = document.querySelector('[data-testid="event-payload"]');
const corr = new URLSearchParams(location.search).get('correlation') || '';

function row(e) {
  return h('tr', { 'data-testid': 'event-row', 'data-event-id': e.id, 'data-correlation-id': e.correlationId, 'data-type': e.type },
    h('td', {}, clock(e.at)),
    h('td', {}, h('button', { type: 'button', class: 'link', 'data-testid': 'event-open' }, e.type)),
    h('td', {}, h('span', { class: 'svc', style: `--c:${serviceColor(e.source)}` }, e.source)),
    h('td', {}, h('a', { href: `/events?correlation=${encodeURIComponent(e.correlationId)}` }, h('code', {}, e.correlationId))),
    h('td', {}, `${e.exchange} / ${e.routingKey} `,
      e.traceId ? h('a', { href: `/traces/${encodeURIComponent(e.traceId)}`, title: 'its trace' }, 'trace') : null));
}

on('event', (e) => {
  if (!e || (corr && e.correlationId !== corr)) return;
  tbody.prepend(row(e));
  while (tbody.rows.length > MAX_ROWS) tbody.lastElementChild.remove();
  document.querySelector('[data-testid="event-empty"]')?.remove();
});

tbody.addEventListener('click', async (ev) => {
  const tr = ev.target.closest('[data-testid="event-row"]');
  if (!tr || !ev.target.closest('[data-testid="event-open"]')) return;
  for (const r of tbody.querySelectorAll('tr.selected')) r.classList.remove('selected');
  tr.classList.add('selected');
  payload.textContent = 'loading…';
  const res = await fetch(`/api/events/${encodeURIComponent(tr.dataset.eventId)}`);
  const body = await res.json().catch(() => null);
  payload.textContent = res.ok ? JSON.stringify(body, null, 2) : (body?.error?.message || `HTTP ${res.status}`);
});

// DLQ: replay / discard, then re-render the section from the server's page.
async function refreshDLQ() {
  const res = await fetch(location.pathname + location.search);
  const doc = new DOMParser().parseFromString(await res.text(), 'text/html');
  const fresh = doc.querySelector('[data-testid="dlq"]');
  const status = document.querySelector('[data-testid="dlq-status"]').textContent;
  if (fresh) document.querySelector('[data-testid="dlq"]').replaceWith(fresh);
  document.querySelector('[data-testid="dlq-status"]').textContent = status;
}

document.addEventListener('click', async (ev) => {
  const b = ev.target.closest('[data-testid="dlq-replay"], [data-testid="dlq-discard"], [data-testid="dlq-replay-one"]');
  if (!b) return;
  const q = encodeURIComponent(b.dataset.queue);
  const status = document.querySelector('[data-testid="dlq-status"]');
  b.disabled = true;
  let r;
  if (b.dataset.testid === 'dlq-discard') r = await postJSON(`/api/dlq/${q}/discard`);
  else if (b.dataset.testid === 'dlq-replay-one') r = await postJSON(`/api/dlq/${q}/replay`, { messageId: b.dataset.messageId });
  else r = await postJSON(`/api/dlq/${q}/replay`);
  status.textContent = !r.ok ? errorText(r)
    : r.data.discarded ? `${b.dataset.queue}: discarded` : `${b.dataset.queue}: ${r.data.replayed} replayed`;
  status.classList.toggle('bad', !r.ok);
  await refreshDLQ();
});

connect();
