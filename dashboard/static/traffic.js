// traffic.js — the traffic generator's controls (Switchboard and Shop share them).
import { on, postJSON, errorText, clock } from './ws.js';

function show(st) {
  const el = document.querySelector('[data-testid="traffic-state"]');
  if (!el || !st) return;
  el.dataset.running = String(!!st.running);
  el.textContent = st.running
    ? `running at ${Number(st.rate).toFixed(1)}/s until ${clock(st.until)} · ${st.placed} placed, ${st.failed} failed`
    : `stopped · ${st.placed} placed, ${st.failed} failed`;
}

export function bindTraffic() {
  const form = document.querySelector('[data-testid="traffic-form"]');
  if (!form) return;
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const r = await postJSON('/api/lab/traffic', { rate: Number(form.rate.value), minutes: Number(form.minutes.value) });
    if (r.ok) show(r.data); else document.querySelector('[data-testid="traffic-state"]').textContent = errorText(r);
  });
  form.querySelector('[data-testid="traffic-stop"]').addEventListener('click', async () => {
    const r = await postJSON('/api/lab/traffic/stop');
    if (r.ok) show(r.data);
  });
  on('traffic', show);
  // The counters move without messages: refresh them while the page is open.
  setInterval(async () => {
    try { const res = await fetch('/api/lab/traffic'); if (res.ok) show(await res.json()); } catch { /* offline */ }
  }, 3000);
}
