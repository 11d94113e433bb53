// The open-alarm count on the Alarms link, kept current without a reload
// (GET /api/v1/dashboard/alarm-summary every few seconds; the badge is touched only when the
// count changed). An API without the summary leaves the badge hidden.

import { get } from "./api.js";
import { POLL_MS } from "./live.js";

let timer = null;

function show(badge, count) {
  if (badge.dataset.count === String(count)) return;
  badge.dataset.count = String(count);
  badge.textContent = String(count);
  badge.hidden = count === 0;
  badge.title = `${count} 条未解除告警 open alarm(s)`;
}

async function poll(badge) {
  if (document.visibilityState !== "visible") return;
  try {
    const summary = await get("/api/v1/dashboard/alarm-summary");
    if (timer) show(badge, summary.open);
  } catch {
    // an API without the summary, or a blip: try again at the next round
  }
}

export function startAlarmBadge() {
  stopAlarmBadge();
  const badge = document.getElementById("alarms-badge");
  timer = setInterval(() => poll(badge), POLL_MS);
  poll(badge);
}

export function stopAlarmBadge() {
  if (timer) clearInterval(timer);
  timer = null;
  const badge = document.getElementById("alarms-badge");
  if (badge) {
    badge.hidden = true;
    delete badge.dataset.count;
  }
}
