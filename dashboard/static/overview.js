// overview.js — the architecture map: dots along edges for "flow", colours, numbers and
// instances from "health", a badge on every service with a fault in force (re-read from
// /api/lab/faults on every fault change, and every few seconds for expiries), and the
// map drawn again, in place, when db.topology or a setting of the pattern strip changes.
import { connect, on } from './ws.js';

const svgNS = 'http://www.w3.org/2000/svg';
const MAX_DOTS_PER_EDGE = 6; // per frame: a busy edge looks busy without melting the page
let dotsInFlight = 0;

function animate(edgeId, n) {
  const line = document.querySelector(`line[data-edge="${CSS.escape(edgeId)}"]`);
  const flows = document.querySelector('[data-testid="flows"]'); // the map may have been redrawn
  if (!line || !flows) return;
  const [x1, y1, x2, y2] = ['x1', 'y1', 'x2', 'y2'].map((a) => Number(line.getAttribute(a)));
  for (let i = 0; i < Math.min(n, MAX_DOTS_PER_EDGE); i++) {
    if (dotsInFlight > 300) return;
    const dot = document.createElementNS(svgNS, 'circle');
    dot.setAttribute('r', '4');
    dot.setAttribute('class', `dot ${line.classList[1] || ''}`);
    flows.append(dot);
    dotsInFlight++;
    const start = performance.now() + i * 90;
    const dur = 700;
    const step = (now) => {
      const t = Math.max(0, Math.min(1, (now - start) / dur));
      dot.setAttribute('cx', String(x1 + (x2 - x1) * t));
      dot.setAttribute('cy', String(y1 + (y2 - y1) * t));
      if (t < 1) requestAnimationFrame(step);
      else { dot.remove(); dotsInFlight--; }
    };
    requestAnimationFrame(step);
  }
}

// "flow": message counts per edge for one frame. Accepted shapes:
// {"<from>><to>": n, ...}, {"edges": {...}}, or [{"edge": id, "count": n}] / [{"from","to","count"}].
on('flow', (d) => {
  if (!d) return;
  if (Array.isArray(d)) {
    for (const e of d) animate(e.edge || `${e.from}>${e.to}`, e.count ?? e.n ?? 1);
    return;
  }
  const edges = d.edges || d;
  for (const [id, n] of Object.entries(edges)) animate(id, Number(n) || 0);
});

let lastHealth = null;

function showHealth(h) {
  if (!h) return;
  lastHealth = h;
  for (const node of document.querySelectorAll('g.node.service')) {
    const name = node.dataset.node;
    const s = (h.services || {})[name];
    node.dataset.state = s && s.state ? s.state : 'unknown';
    const insts = (h.instances || {})[name] || [];
    node.dataset.instances = insts.join(' ');
    const title = node.querySelector('title');
    if (title) title.textContent = insts.length ? `${name}: ${insts.join(', ')}` : name;
    const label = node.querySelector('[data-testid^="health-"]');
    if (label) {
      label.textContent = s && s.state && s.state !== 'unknown'
        ? `${s.rate.toFixed(1)} req/s${s.consumes ? ` · ${s.msgRate.toFixed(1)} msg/s` : ''} · ${s.errorPct.toFixed(1)}% · p95 ${Math.round(s.p95Ms)}ms`
        : 'no data';
    }
  }
  for (const el of document.querySelectorAll('[data-testid^="depth-"]')) {
    const q = el.dataset.testid.slice('depth-'.length);
    el.textContent = String((h.queues || {})[q] ?? 0);
  }
  let notice = document.querySelector('[data-testid="health-error"]');
  if (h.error) {
    if (!notice) {
      notice = document.createElement('p');
      notice.className = 'notice';
      notice.dataset.testid = 'health-error';
      document.querySelector('.overview svg').before(notice);
    }
    notice.textContent = h.error;
  } else if (notice) notice.remove();
}

on('health', showHealth);

// The strip's numbers (the cache's hit ratio, healthy instances behind the registry) are
// the health poll's: with every health message while a pattern is on, the labels are read
// again from the server (the one place that words them) and set in place — the map itself
// is not redrawn, so the dots in flight keep running.
let labelling = false;
async function refreshPatternLabels() {
  if (labelling || !document.querySelector('[data-testid^="pattern-"][data-key]')) return;
  labelling = true;
  try {
    const res = await fetch('/overview/map');
    if (!res.ok) return;
    const doc = new DOMParser().parseFromString(await res.text(), 'text/html');
    for (const el of doc.querySelectorAll('[data-testid^="badge-"], [data-testid^="edge-label-"], [data-testid^="pattern-"][data-key] .pattern-label')) {
      const sel = el.classList.contains('pattern-label')
        ? `[data-testid="${CSS.escape(el.closest('[data-key]').dataset.testid)}"] .pattern-label`
        : `[data-testid="${CSS.escape(el.dataset.testid)}"]`;
      const mine = document.querySelector(sel);
      if (mine && mine.textContent !== el.textContent) mine.textContent = el.textContent;
    }
  } catch { /* offline: the next health message tries again */ } finally { labelling = false; }
}
on('health', refreshPatternLabels);

function badge(f) { return f.instance ? `${f.instance}: ${f.text}` : f.text; }

async function refreshFaults() {
  let faults;
  try {
    const res = await fetch('/api/lab/faults');
    if (!res.ok) return;
    faults = (await res.json()).faults || [];
  } catch { return; }
  const by = {};
  for (const f of faults) (by[f.service] ||= []).push(badge(f));
  for (const node of document.querySelectorAll('g.node.service')) {
    const list = by[node.dataset.node] || [];
    node.dataset.fault = String(list.length > 0);
    node.classList.toggle('faulty', list.length > 0);
    const el = node.querySelector('[data-testid^="fault-"]');
    if (el) el.textContent = list.length ? `⚡ ${list.join(', ')}` : '';
  }
}

// redrawMap draws the map again from the server (GET /overview/map: the same template
// as the page) and puts it in place of the old one: the databases are drawn for the
// db.topology in force, so a switch moves them without a reload (the page keeps its
// websocket, its scroll and whatever else it holds). Only the newest request's answer is
// drawn, so two switches in a row end on the second.
let drawn = 0;
async function redrawMap() {
  const mine = ++drawn;
  let text;
  try {
    const res = await fetch('/overview/map');
    if (!res.ok) return;
    text = await res.text();
  } catch { return; } // offline: the next change repairs it
  if (mine !== drawn) return;
  const doc = new DOMParser().parseFromString(text, 'text/html');
  const fresh = doc.querySelector('[data-testid="arch-map"]');
  const old = document.querySelector('[data-testid="arch-map"]');
  if (!fresh || !old) return;
  old.replaceWith(document.importNode(fresh, true));
  const strip = doc.querySelector('[data-testid="pattern-strip"]');
  const oldStrip = document.querySelector('[data-testid="pattern-strip"]');
  if (strip && oldStrip) oldStrip.replaceWith(document.importNode(strip, true));
  showHealth(lastHealth); // a health message may have come while the map was fetched
  refreshFaults();
}

on('setting', (c) => { if (c && (c.key.startsWith('fault ') || c.key === 'reset')) refreshFaults(); });
// db.topology changed (from a switchboard, the CLI, an exercise, a reset, or lab up
// setting it back after a failed switch): draw the databases where the setting now puts
// them. The end of
// a switch (lab up's "db.topology is …" or "switch failed" step) redraws too, so the map
// is current once the services have moved.
// A setting the pattern strip reads (its data-keys: catalog.transport, gateway.cache.ttl,
// …) changed: the map and the strip drawn again for it.
on('setting', (c) => {
  const strip = document.querySelector('[data-testid="pattern-strip"]');
  if (c && strip && (c.key === 'reset' || strip.dataset.keys.split(' ').includes(c.key))) redrawMap();
});
on('setting', (c) => {
  if (!c) return;
  if (c.key === 'db.topology' ||
      (c.key === 'db.topology switch' && /^(db\.topology is |switch failed)/.test(c.new || ''))) redrawMap();
});
setInterval(refreshFaults, 5000);

connect();
