// ws.js — the page's one websocket, and a few helpers every view module shares.
//
// connect() opens /ws (same origin), reconnects with exponential backoff and jitter,
// and dispatches each message {type, data} to the handlers registered with on(type, fn).
// The header shows the connection's state (data-testid="ws-state": data-state is
// connecting | open | closed) and how many messages the server dropped for this
// browser because it fell behind ("stats" messages, data-testid="ws-drops").

const handlers = new Map();

/** on registers fn(data, message) for messages of one type. */
export function on(type, fn) {
  if (!handlers.has(type)) handlers.set(type, []);
  handlers.get(type).push(fn);
}

function dispatch(msg) {
  if (!msg || typeof msg.type !== 'string') return;
  for (const fn of handlers.get(msg.type) || []) {
    try { fn(msg.data, msg); } catch (err) { console.error('handler for', msg.type, err); }
  }
}

function setState(state, text) {
  const el = document.querySelector('[data-testid="ws-state"]');
  if (!el) return;
  el.dataset.state = state;
  el.textContent = text;
}

on('stats', (d) => {
  const el = document.querySelector('[data-testid="ws-drops"]');
  if (!el || !d) return;
  const n = d.dropped ?? d.drops ?? 0;
  el.textContent = `${n} dropped`;
  el.dataset.dropped = String(n);
  el.classList.toggle('bad', n > 0);
});

let started = false;

/** connect opens the websocket once per page and keeps it open. */
export function connect() {
  if (started) return;
  started = true;
  const url = (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/ws';
  let backoff = 500;
  const schedule = () => {
    const wait = backoff + Math.random() * backoff * 0.3;
    setState('closed', `offline, retrying in ${Math.ceil(wait / 1000)}s`);
    setTimeout(open, wait);
    backoff = Math.min(backoff * 2, 15000);
  };
  function open() {
    setState('connecting', 'connecting…');
    let ws;
    try { ws = new WebSocket(url); } catch { schedule(); return; }
    ws.onopen = () => { backoff = 500; setState('open', 'live'); };
    ws.onmessage = (ev) => {
      let msg;
      try { msg = JSON.parse(ev.data); } catch { return; }
      dispatch(msg);
    };
    ws.onclose = schedule;
  }
  open();
}

/** postJSON posts body as JSON; resolves {ok, status, data} (data: the parsed answer). */
export async function postJSON(url, body) {
  const init = { method: 'POST', headers: { 'Content-Type': 'application/json' } };
  if (body !== undefined) init.body = JSON.stringify(body);
  let res;
  try { res = await fetch(url, init); } catch (err) { return { ok: false, status: 0, data: { error: { message: String(err) } } }; }
  let data = null;
  try { data = await res.json(); } catch { /* not JSON */ }
  return { ok: res.ok, status: res.status, data };
}

/** errorText is the message of an {"error": {code, message}} answer. */
export function errorText(r) {
  return (r.data && r.data.error && r.data.error.message) || `HTTP ${r.status}`;
}

/** h builds an element: h('td', {class: 'num', dataset: {x: 1}}, 'text', child). */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'dataset') Object.assign(el.dataset, v);
    else if (k === 'style') el.setAttribute('style', v);
    else if (k === 'class') el.className = v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

/** fmtDur formats nanoseconds like the server does (830µs, 12.4ms, 1.25s). */
export function fmtDur(ns) {
  if (ns < 1e6) return `${Math.round(ns / 1e3)}µs`;
  if (ns < 1e9) return `${(ns / 1e6).toFixed(1)}ms`;
  return `${(ns / 1e9).toFixed(2)}s`;
}

/** clock formats a timestamp as HH:MM:SS.mmm (UTC, like the server). */
export function clock(iso) {
  const d = new Date(iso);
  if (isNaN(d)) return '';
  return d.toISOString().slice(11, 23);
}

/** serviceColor matches views.ServiceColor. */
export function serviceColor(s) {
  const fixed = { gateway: 210, users: 280, catalog: 40, orders: 200, payments: 140, inventory: 30, shipping: 260, notifications: 330, dashboard: 0 };
  let hue = fixed[s];
  if (hue === undefined) { // FNV-1a, as the server
    let x = 0x811c9dc5;
    for (const b of new TextEncoder().encode(s)) { x ^= b; x = Math.imul(x, 0x01000193) >>> 0; }
    hue = x % 360;
  }
  return `hsl(${hue} 65% 50%)`;
}
