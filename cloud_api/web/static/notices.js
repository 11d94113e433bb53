// Drop-offs waiting for staff, announced without a reload: a count on the Tasks link and a
// bar above the page listing the new ones until dismissed. The server lists the drop-offs
// that wait (GET /api/v1/dashboard/notices); which of them this browser has dismissed is
// kept here (localStorage, by handover id), so a dismissed notice stays dismissed.

import { get } from "./api.js";
import { h, showToast, when } from "./dom.js";

const DISMISSED_KEY = "xinbao.notices.dismissed";
const POLL_MS = 5000;

let timer = null;
let known = null; // handover ids seen waiting at the last poll (null: not polled yet)

function dismissed() {
  try {
    return new Set(JSON.parse(localStorage.getItem(DISMISSED_KEY) || "[]"));
  } catch {
    return new Set();
  }
}

function remember(ids) {
  localStorage.setItem(DISMISSED_KEY, JSON.stringify([...ids]));
}

function render(bar, badge, fresh, waiting) {
  badge.textContent = String(fresh.length);
  badge.hidden = fresh.length === 0;
  badge.dataset.count = String(fresh.length);
  if (!fresh.length) {
    bar.hidden = true;
    bar.replaceChildren();
    return;
  }
  const dismiss = h("button", { type: "button", class: "small", id: "notices-dismiss" }, "知道了 Dismiss");
  dismiss.addEventListener("click", () => {
    // Only ids still waiting are kept: the list never grows past what waits now.
    remember(waiting.map((d) => d.handover_id));
    render(bar, badge, [], waiting);
  });
  bar.replaceChildren(
    h("strong", {}, `新投递材料 ${fresh.length} 份待收取 · ${fresh.length} new drop-off(s) to collect`),
    h(
      "ul",
      {},
      fresh.map((d) =>
        h(
          "li",
          { "data-handover-id": d.handover_id },
          `${d.application_number} · ${d.applicant_name} · ${d.locker_id} #${d.compartment} · ${when(d.deposited_at)}`,
        ),
      ),
    ),
    h("a", { href: "#/tasks" }, "去收取 Go to tasks"),
    " ",
    dismiss,
  );
  bar.hidden = false;
}

async function poll(bar, badge) {
  let answer;
  try {
    answer = await get("/api/v1/dashboard/notices?limit=200");
  } catch {
    return; // an API without notices, or a blip: try again at the next round
  }
  const waiting = answer.dropoffs;
  const gone = dismissed();
  const fresh = waiting.filter((d) => !gone.has(d.handover_id));
  const arrived = known ? fresh.filter((d) => !known.has(d.handover_id)) : [];
  if (arrived.length) {
    showToast(`新投递材料 New drop-off: ${arrived[arrived.length - 1].application_number}`, "good");
  }
  known = new Set(waiting.map((d) => d.handover_id));
  render(bar, badge, fresh, waiting);
}

export function startNotices() {
  stopNotices();
  const bar = document.getElementById("notice-bar");
  const badge = document.getElementById("tasks-badge");
  poll(bar, badge);
  timer = setInterval(() => poll(bar, badge), POLL_MS);
}

export function stopNotices() {
  if (timer) clearInterval(timer);
  timer = null;
  known = null;
  const bar = document.getElementById("notice-bar");
  if (bar) bar.hidden = true;
  const badge = document.getElementById("tasks-badge");
  if (badge) badge.hidden = true;
}
