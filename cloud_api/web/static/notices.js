// Drop-offs waiting for staff, announced without a reload: a count on the Tasks link and a
// bar above the page listing the new ones until dismissed. The server says which drop-offs
// were deposited after a cursor (GET /api/v1/dashboard/notices); the cursor of the last one
// dismissed is kept in this browser (localStorage), so a dismissed notice stays dismissed.

import { get, query } from "./api.js";
import { h, showToast, when } from "./dom.js";

const SEEN_KEY = "xinbao.notices.seen";
const POLL_MS = 5000;

let timer = null;
let shown = [];

function seen() {
  return Number(localStorage.getItem(SEEN_KEY) || 0);
}

function render(bar, badge, answer) {
  const waiting = shown.filter((n) => n.state === "deposited");
  badge.textContent = String(waiting.length);
  badge.hidden = waiting.length === 0;
  badge.dataset.count = String(waiting.length);
  if (!waiting.length) {
    bar.hidden = true;
    bar.replaceChildren();
    return;
  }
  const dismiss = h("button", { type: "button", class: "small", id: "notices-dismiss" }, "知道了 Dismiss");
  dismiss.addEventListener("click", () => {
    localStorage.setItem(SEEN_KEY, String(answer.latest));
    shown = [];
    render(bar, badge, answer);
  });
  bar.replaceChildren(
    h("strong", {}, `新投递材料 ${waiting.length} 份待收取 · ${waiting.length} new drop-off(s) to collect`),
    h(
      "ul",
      {},
      waiting.map((n) =>
        h(
          "li",
          { "data-notice-id": n.id, "data-handover-id": n.handover_id },
          `${n.application_number} · ${n.applicant_name} · ${n.locker_id} #${n.compartment ?? "?"} · ${when(n.deposited_at)}`,
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
    answer = await get(`/api/v1/dashboard/notices${query({ after: seen(), limit: 200 })}`);
  } catch {
    return; // an API without notices, or a blip: try again at the next round
  }
  const known = new Set(shown.map((n) => n.id));
  const fresh = answer.notices.filter((n) => !known.has(n.id));
  shown = answer.notices;
  if (fresh.some((n) => n.state === "deposited") && bar.dataset.started === "true") {
    showToast(`新投递材料 New drop-off: ${fresh[fresh.length - 1].application_number}`, "good");
  }
  bar.dataset.started = "true";
  render(bar, badge, answer);
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
  shown = [];
  const bar = document.getElementById("notice-bar");
  if (bar) {
    bar.hidden = true;
    bar.dataset.started = "false";
  }
}
