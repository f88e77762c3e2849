// switchboard.js — change a setting (POST /api/lab/settings), show the server's
// message on a bad value, and keep the values and the timeline live ("setting").
import { connect, on, h, clock, postJSON, errorText } from './ws.js';
import { bindTraffic } from './traffic.js';

const errBox = document.querySelector('[data-testid="setting-error"]');
const changes = document.querySelector('[data-testid="changes"]');

function showValue(key, value) {
  const row = document.querySelector(`tr[data-key="${CSS.escape(key)}"]`);
  if (!row) return;
  row.querySelector('[data-testid="setting-value"]').textContent = value;
  const input = row.querySelector('[data-testid="setting-input"]');
  if (input && document.activeElement !== input) input.value = value;
}

function addChange(c) {
  if (!changes || changes.querySelector(`[data-revision="${c.revision}"]`)) return;
  changes.prepend(h('li', { 'data-testid': 'change', 'data-revision': String(c.revision) },
    h('time', {}, clock(c.at)), ' ', h('code', {}, c.key), ` ${c.old} → `, h('strong', {}, c.new), ' ',
    h('span', { class: 'meta' }, `by ${c.source} · rev ${c.revision}`)));
}

document.addEventListener('submit', async (ev) => {
  const form = ev.target.closest('[data-testid="setting-form"]');
  if (!form) return;
  ev.preventDefault();
  const r = await postJSON('/api/lab/settings', { key: form.dataset.key, value: form.value.value });
  if (!r.ok) {
    errBox.textContent = errorText(r);
    errBox.hidden = false;
    return;
  }
  errBox.hidden = true;
  showValue(r.data.change.key, r.data.change.new);
  addChange(r.data.change);
});

on('setting', (c) => {
  if (!c) return;
  showValue(c.key, c.new);
  addChange(c);
});

bindTraffic();
connect();
