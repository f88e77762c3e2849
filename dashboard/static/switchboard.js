// switchboard.js — the lab's switches: change a setting (POST /api/lab/settings),
// inject a fault (POST /api/lab/faults), clear one or all (DELETE /api/lab/faults),
// reset the lab (POST /api/lab/reset). A refusal shows the server's one-line message
// next to the control that caused it. Values, faults and the timeline stay live:
// every change, whoever made it (this page, another browser, the CLI, an exercise, a
// service firing a one-shot fault), arrives as a "setting" message.
import { connect, on, h, clock, postJSON, errorText } from './ws.js';
import { bindTraffic } from './traffic.js';

const changes = document.querySelector('[data-testid="changes"]');
const faultList = document.querySelector('[data-testid="fault-list"]');
const faultEmpty = document.querySelector('[data-testid="fault-empty"]');

function showError(el, text) {
  if (!el) return;
  el.textContent = text || '';
  el.hidden = !text;
}

function showValue(key, value) {
  const row = document.querySelector(`tr[data-key="${CSS.escape(key)}"]`);
  if (!row) return;
  row.querySelector('[data-testid="setting-value"]').textContent = value;
  const input = row.querySelector('[data-testid="setting-input"]');
  if (input && document.activeElement !== input) input.value = value;
}

function addChange(c) {
  if (!changes || changes.querySelector(`[data-revision="${c.revision}"]`)) return;
  const detail = c.source && c.who !== c.source ? ` (${c.source})` : '';
  const li = h('li', { 'data-testid': 'change', 'data-revision': String(c.revision) },
    h('time', {}, clock(c.at)), ' ', h('code', {}, c.key), ` ${c.old} → `, h('strong', {}, c.new), ' ',
    h('span', { class: 'meta' }, 'by ', h('span', { 'data-testid': 'change-who' }, c.who || c.source), detail, ` · rev ${c.revision}`));
  // Newest first, by revision: a change pushed late (made elsewhere) goes in its place.
  const after = [...changes.children].find((el) => Number(el.dataset.revision) < c.revision);
  if (after) after.before(li); else changes.append(li);
}

// --- faults ---

function left(expires) {
  const s = Math.max(0, Math.floor((new Date(expires) - Date.now()) / 1000));
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, '0')}`;
}

function faultRow(f) {
  return h('tr', { 'data-testid': 'fault', 'data-fault-id': String(f.id), 'data-target': f.target, 'data-expires': f.expires },
    h('td', {}, h('code', {}, f.target)), h('td', {}, f.text), h('td', { 'data-testid': 'fault-left' }, left(f.expires)),
    h('td', { class: 'meta' }, f.who || f.source),
    // A diagnosis's hidden fault says so, not where: no clear button to name it by.
    h('td', {}, f.hidden ? null : h('button', { type: 'button', 'data-testid': 'fault-clear', 'data-target': f.target }, 'clear')));
}

function showFaults(faults) {
  if (!faultList) return;
  faultList.replaceChildren(...faults.map(faultRow));
  if (faultEmpty) faultEmpty.hidden = faults.length > 0;
}

let refreshing = null;
async function refreshFaults() {
  if (refreshing) return refreshing;
  refreshing = (async () => {
    try {
      const res = await fetch('/api/lab/faults');
      if (res.ok) showFaults((await res.json()).faults || []);
    } catch { /* offline: the next change or tick repairs it */ }
  })();
  try { await refreshing; } finally { refreshing = null; }
}

// Count every fault down; one that runs out leaves the list (the server forgets it too).
setInterval(() => {
  if (!faultList) return;
  let expired = false;
  for (const tr of faultList.querySelectorAll('[data-testid="fault"]')) {
    const el = tr.querySelector('[data-testid="fault-left"]');
    el.textContent = left(tr.dataset.expires);
    if (new Date(tr.dataset.expires) <= Date.now()) expired = true;
  }
  if (expired) refreshFaults();
}, 1000);

async function del(url) {
  let res;
  try { res = await fetch(url, { method: 'DELETE' }); } catch (err) { return { ok: false, status: 0, data: { error: { message: String(err) } } }; }
  let data = null;
  try { data = await res.json(); } catch { /* not JSON */ }
  return { ok: res.ok, status: res.status, data };
}

function applied(chs) {
  for (const c of chs || []) {
    if (!c.key.startsWith('fault ') && c.key !== 'reset') showValue(c.key, c.new);
    addChange(c);
  }
}

document.addEventListener('submit', async (ev) => {
  const setting = ev.target.closest('[data-testid="setting-form"]');
  const fault = ev.target.closest('[data-testid="fault-form"]');
  if (!setting && !fault) return;
  ev.preventDefault();
  if (setting) {
    const err = setting.querySelector('[data-testid="setting-inline-error"]');
    const r = await postJSON('/api/lab/settings', { key: setting.dataset.key, value: setting.value.value });
    if (!r.ok) { showError(err, errorText(r)); return; }
    showError(err, '');
    applied([r.data.change]);
    return;
  }
  const err = fault.querySelector('[data-testid="fault-error"]');
  const spec = {};
  for (const k of ['service', 'instance', 'kind', 'value', 'on', 'for']) {
    const v = fault.elements[k].value.trim();
    if (v) spec[k] = v;
  }
  const r = await postJSON('/api/lab/faults', spec);
  if (!r.ok) { showError(err, errorText(r)); return; }
  showError(err, '');
  applied([r.data.change]);
  refreshFaults();
});

document.addEventListener('click', async (ev) => {
  const clear = ev.target.closest('[data-testid="fault-clear"], [data-testid="fault-clear-all"]');
  const reset = ev.target.closest('[data-testid="lab-reset"]');
  if (clear) {
    const target = clear.dataset.target;
    const r = await del('/api/lab/faults' + (target ? `?target=${encodeURIComponent(target)}` : ''));
    showError(document.querySelector('[data-testid="fault-error"]'), r.ok ? '' : errorText(r));
    if (r.ok) applied(r.data.changes);
    refreshFaults();
  } else if (reset) {
    const r = await postJSON('/api/lab/reset');
    showError(document.querySelector('[data-testid="reset-error"]'), r.ok ? '' : errorText(r));
    if (r.ok) applied(r.data.changes);
    refreshFaults();
  }
});

on('setting', (c) => {
  if (!c) return;
  applied([c]);
  if (c.key.startsWith('fault ') || c.key === 'reset') refreshFaults();
});

bindTraffic();
connect();
