// metrics.js — the panels are drawn by the server (inline SVG); refresh them every 15s.
import { connect } from './ws.js';

const box = document.querySelector('[data-testid="metrics-panels"]');

async function refresh() {
  try {
    const res = await fetch('/charts/panels');
    if (res.ok) box.innerHTML = await res.text(); // our own server-rendered, escaped HTML
  } catch { /* offline: keep what is shown */ }
}

setInterval(refresh, 15000);
connect();
