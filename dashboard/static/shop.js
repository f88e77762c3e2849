// shop.js — log in as a demo user, place an order, follow its status. Every call goes
// to the dashboard (/api/shop/*), which calls the gateway.
import { connect, on, h, clock, postJSON, errorText } from './ws.js';
import { bindTraffic } from './traffic.js';

const $ = (id) => document.querySelector(`[data-testid="${id}"]`);
let current = null; // the order being followed
let poll = null;

function showError(msg) {
  $('order-error').textContent = msg;
  $('order-error').hidden = !msg;
}

$('login-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const r = await postJSON('/api/shop/login', { email: $('login-user').value });
  $('login-state').textContent = r.ok ? `logged in as ${r.data.email}` : errorText(r);
  $('login-state').dataset.loggedIn = String(r.ok);
});

function showOrder(o) {
  $('order-status').textContent = o.status;
  $('order-status').dataset.status = o.status;
  $('order-reason').textContent = o.cancelReason ? `(${o.cancelReason})` : '';
  if (o.traceId) $('order-trace-link').href = `/traces/${encodeURIComponent(o.traceId)}`;
  const steps = $('order-steps');
  steps.replaceChildren(...(o.steps || []).map((s) => h('li', {}, `${clock(s.at)} ${s.name}: ${s.status}`, s.detail ? ` — ${s.detail}` : '')));
}

async function follow(id) {
  clearInterval(poll);
  const started = Date.now();
  const tick = async () => {
    if (current !== id) return;
    const res = await fetch(`/api/shop/orders/${encodeURIComponent(id)}`).catch(() => null);
    if (res && res.ok) {
      const o = await res.json();
      showOrder(o);
      if (o.status !== 'pending') clearInterval(poll);
    }
    if (Date.now() - started > 60000) clearInterval(poll);
  };
  poll = setInterval(tick, 1000);
  tick();
}

$('order-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const f = ev.target;
  showError('');
  const r = await postJSON('/api/shop/orders', {
    sku: f.sku.value, qty: Number(f.qty.value), card: f.card.value, country: f.country.value,
  });
  if (!r.ok) { showError(errorText(r)); return; }
  const o = r.data;
  current = o.orderId;
  $('order-result').hidden = false;
  $('order-id').textContent = o.orderId;
  $('order-trace-link').href = o.traceId ? `/traces/${encodeURIComponent(o.traceId)}` : '/traces';
  $('order-saga-link').href = `/sagas?order=${encodeURIComponent(o.orderId)}`;
  $('order-events-link').href = `/events?correlation=${encodeURIComponent(o.orderId)}`;
  showOrder({ status: o.status, traceId: o.traceId });
  follow(o.orderId);
});

// A saga message for the followed order updates the status before the next poll.
on('saga', (s) => {
  if (s && s.orderId === current && s.outcome !== 'pending') {
    $('order-status').textContent = s.outcome;
    $('order-status').dataset.status = s.outcome;
  }
});

bindTraffic();
connect();
