// The ground-truth log, newest first: what physically happened on the simulated cabinet.
// Fetched incrementally (?since=last seq); only the latest TRUTH_KEEP rows stay on the page.

import { api, el, query } from "./api.js";

const TRUTH_KEEP = 400;
const WIRE_KINDS = new Set(["frame_received", "reply_sent", "reply_lost", "noise_dropped",
  "master_connected", "master_disconnected"]);
const EVENT_LABELS = {
  frame_received: ["收到帧", "wire"],
  reply_sent: ["发出应答", "wire"],
  reply_lost: ["应答丢失", "wire"],
  noise_dropped: ["丢弃噪声", "wire"],
  master_connected: ["主机连接", "wire"],
  master_disconnected: ["主机断开", "wire"],
  lock_pulse: ["锁脉冲", "lock"],
  door_opened: ["开门", "door"],
  door_closed: ["关门", "door"],
  close_blocked: ["关门受阻", "door"],
  item_put: ["放入物品", "item"],
  item_taken: ["取出物品", "item"],
  fault_injected: ["注入故障", "fault"],
  fault_cleared: ["清除故障", "fault"],
};
const BY_LABELS = { command: "指令 command", tester: "测试员 tester", forced: "强行 forced" };

let shownSeq = null; // highest seq on the page; null until the first fetch
let busy = false;

function clock(wall) {
  const d = new Date(wall * 1000);
  const pad = (n, w = 2) => String(n).padStart(w, "0");
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.` +
    pad(d.getMilliseconds(), 3);
}

function truthRow(event, fresh) {
  const [label, group] = EVENT_LABELS[event.kind] || [event.kind, "wire"];
  const place = [];
  if (event.bus !== null) place.push(event.bus);
  if (event.board !== null) place.push(`板${event.board}`);
  if (event.channel !== null) place.push(`门${event.channel}`);
  const details = [];
  if (event.by) details.push(`by=${BY_LABELS[event.by] || event.by}`);
  for (const [k, v] of Object.entries(event.data)) {
    details.push(`${k}=${typeof v === "object" ? JSON.stringify(v) : v}`);
  }
  const kind = el("span", { class: "kind", "data-group": group, text: `${label} ${event.kind}` });
  const row = el("tr", { "data-seq": event.seq, "data-kind": event.kind },
    el("td", { class: "seq", text: String(event.seq) }),
    el("td", { class: "time", text: clock(event.wall) }),
    el("td", {}, kind),
    el("td", { class: "place", text: place.join(" · ") }),
    el("td", { class: "details", text: details.join("  ") }));
  row.dataset.wire = String(WIRE_KINDS.has(event.kind));
  if (fresh) row.classList.add("fresh");
  return row;
}

export async function refreshTruth() {
  if (busy || !document.getElementById("truth-auto").checked) return;
  busy = true;
  try {
    const first = shownSeq === null;
    const answer = await api("GET", "/truth" +
      query(first ? { limit: TRUTH_KEEP } : { since: shownSeq }));
    const body = document.getElementById("truth-body");
    for (const event of answer.events) {
      if (!first && event.seq <= shownSeq) continue;
      body.prepend(truthRow(event, !first)); // newest on top
    }
    while (body.rows.length > TRUTH_KEEP) body.lastElementChild.remove();
    shownSeq = Math.max(shownSeq || 0, answer.last_seq);
    document.getElementById("truth-count").textContent =
      `共 ${answer.last_seq} 条 events · 显示最近 ${body.rows.length} showing latest`;
  } finally {
    busy = false;
  }
}

export function initTruth(onResume) {
  document.getElementById("truth-hide-wire").addEventListener("change", (e) => {
    document.getElementById("truth-table").classList.toggle("hide-wire", e.target.checked);
  });
  document.getElementById("truth-auto").addEventListener("change", onResume);
}
