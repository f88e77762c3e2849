// traces.js — the live trace list ("traces" messages) and, on /traces/{id}, the
// waterfall's span details (click a span to open them).
import { connect, on, h, fmtDur, clock, serviceColor } from './ws.js';

const MAX_ROWS = 300;
const tbody = document.querySelector('[data-testid="trace-list"]');

function filters() {
  const f = document.querySelector('[data-testid="trace-filters"]');
  return {
    service: f?.service.value || '',
    errorsOnly: !!f?.errors.checked,
    minMs: Number(f?.minMs.value || 0),
  };
}

function keep(t, f) {
  if (f.service && t.rootService !== f.service && !(t.services || []).includes(f.service)) return false;
  if (f.errorsOnly && !t.error) return false;
  return t.durationNs >= f.minMs * 1e6;
}

function row(t) {
  return h('tr', {
    'data-testid': 'trace-row', 'data-trace-id': t.traceId, 'data-service': t.rootService,
    'data-services': (t.services || []).join(' '), 'data-error': String(!!t.error),
    'data-duration-ms': (t.durationNs / 1e6).toFixed(3), class: t.error ? 'error' : '',
  },
  h('td', {}, clock(t.start)),
  h('td', {}, h('span', { class: 'svc', style: `--c:${serviceColor(t.rootService)}` }, t.rootService)),
  h('td', {}, h('a', { href: `/traces/${encodeURIComponent(t.traceId)}`, 'data-testid': 'trace-link' }, t.rootName)),
  h('td', { class: 'num' }, fmtDur(t.durationNs)),
  h('td', { class: 'num' }, String(t.spans)),
  h('td', {}, (t.services || []).join(', ')),
  h('td', {}, h('span', { class: `badge ${t.error ? 'bad' : 'ok'}` }, t.error ? 'error' : 'ok')));
}

if (tbody) {
  // A trace grows while its spans arrive: the same id replaces its row.
  on('traces', (list) => {
    const f = filters();
    for (const t of [].concat(list || []).reverse()) {
      const old = tbody.querySelector(`tr[data-trace-id="${CSS.escape(t.traceId)}"]`);
      if (!keep(t, f)) { old?.remove(); continue; }
      const r = row(t);
      if (old) old.replaceWith(r); else tbody.prepend(r);
    }
    while (tbody.rows.length > MAX_ROWS) tbody.lastElementChild.remove();
    document.querySelector('[data-testid="trace-empty"]')?.remove();
  });
  // Filters apply at once to what is shown; the form's GET is for bookmarking.
  document.querySelector('[data-testid="trace-filters"]')?.addEventListener('change', () => {
    const f = filters();
    for (const tr of tbody.rows) {
      const t = {
        rootService: tr.dataset.service, services: tr.dataset.services.split(' '),
        error: tr.dataset.error === 'true', durationNs: Number(tr.dataset.durationMs) * 1e6,
      };
      tr.hidden = !keep(t, f);
    }
  });
}

// The waterfall: toggling a span's details.
document.querySelector('[data-testid="waterfall"]')?.addEventListener('click', (ev) => {
  const row = ev.target.closest('[data-testid="span-row"]');
  if (!row) return;
  const detail = row.querySelector('[data-testid="span-detail"]');
  detail.hidden = !detail.hidden;
  row.querySelector('[data-testid="span-toggle"]').setAttribute('aria-expanded', String(!detail.hidden));
  row.classList.toggle('open', !detail.hidden);
  // Show the other end of an AMQP hop.
  for (const el of document.querySelectorAll('.wf-row.hop-peer')) el.classList.remove('hop-peer');
  if (!detail.hidden && row.dataset.hopFrom) {
    document.querySelector(`[data-span-id="${CSS.escape(row.dataset.hopFrom)}"]`)?.classList.add('hop-peer');
  }
});

connect();

// A trace opened right after its request (the shop's "its trace" link) is usually not
// here yet: spans reach the dashboard a second or two later. Wait for them, for a while.
const missing = document.querySelector('[data-testid="trace-missing"]');
if (missing) {
  const url = new URL(location.href);
  const tries = Number(url.searchParams.get('wait') || 0);
  if (tries < 15) {
    missing.append(' Waiting for its spans…');
    setTimeout(() => {
      url.searchParams.set('wait', String(tries + 1));
      location.replace(url.toString());
    }, 2000);
  }
}
