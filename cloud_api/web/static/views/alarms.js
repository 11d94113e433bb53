// Alarms raised from locker events (door left open, forced, jammed, board down, locker off
// line, repeated code guessing). They come from the cloud's MQTT side; an API without it shows "unavailable".
// The list follows the server (live.js): a new alarm appears without a reload, and the list is
// redrawn only when it changed.

import { get, post, query } from "../api.js";
import { badge, bi, failure, h, panel, showToast, table, when } from "../dom.js";
import { name, tone } from "../labels.js";
import { watch } from "../live.js";

function ackCell(alarm) {
  const acked = alarm.acked_at || alarm.acknowledged_at;
  if (acked) {
    return h("span", { class: "sub", "data-acked": "true" }, `已确认 acked ${when(acked)}${alarm.acked_by ? ` · ${alarm.acked_by}` : ""}`);
  }
  const button = h("button", { type: "button", class: "small", "data-ack": alarm.id }, "确认 Ack");
  button.addEventListener("click", async () => {
    button.disabled = true;
    try {
      const answer = await post(`/api/v1/alarms/${alarm.id}/ack`);
      showToast("告警已确认 Alarm acknowledged", "good");
      button.replaceWith(ackCell({ ...alarm, ...(answer || {}), acked_at: answer?.acked_at || new Date().toISOString() }));
    } catch (err) {
      showToast(`确认失败 Ack failed: ${err.message}`, "bad");
      button.disabled = false;
    }
  });
  return button;
}

// A lockout alarm (someone keeps guessing at a cabinet): staff who have looked can lift the
// cabinet's lockout (a signed lift_lockout command, audited), which also clears the alarm.
function liftButton(alarm) {
  if (alarm.kind !== "lockout" || alarm.cleared_at) return null;
  const button = h("button", { type: "button", class: "small", "data-lift": alarm.locker_id }, "解除锁定 Lift lockout");
  button.addEventListener("click", async () => {
    button.disabled = true;
    try {
      const c = await post(`/api/v1/lockers/${encodeURIComponent(alarm.locker_id)}/lockout/lift`, { reason: "dashboard" });
      const good = c.status === "ok";
      showToast(good ? "锁定已解除 Lockout lifted" : `柜机未确认 Locker did not confirm: ${name(c.status)}`, good ? "good" : "bad");
      button.replaceWith(h("span", { class: "sub", "data-lifted": good ? "true" : "false" }, good ? "已解除 lifted" : name(c.status)));
    } catch (err) {
      showToast(`解除失败 Lift failed: ${err.message}`, "bad");
      button.disabled = false;
    }
  });
  return button;
}

function alarmRow(alarm) {
  return h(
    "tr",
    { "data-alarm-id": alarm.id, "data-kind": alarm.kind, class: alarm.cleared_at ? "cleared" : "" },
    // What staff must know (e.g. "handover 7 is in compartment 3, not 5 ..."), when the
    // cloud put it in words.
    h("td", {}, badge(name(alarm.kind), tone(alarm.kind)), alarm.data?.message ? h("div", { class: "sub" }, alarm.data.message) : null),
    h("td", {}, h("a", { href: `#/lockers/${encodeURIComponent(alarm.locker_id)}` }, alarm.locker_id)),
    h("td", {}, alarm.compartment ?? "—"),
    h("td", { class: "nowrap" }, when(alarm.raised_at)),
    h("td", {}, alarm.cleared_at ? when(alarm.cleared_at) : badge("未解除 open", "bad")),
    h("td", {}, ackCell(alarm), liftButton(alarm)),
  );
}

export async function render(main) {
  const results = h("div", { id: "alarms-results" });
  const showAll = h("input", { type: "checkbox", id: "alarms-all" });
  const live = watch(
    async () => {
      const all = showAll.checked;
      return { all, alarms: await get(`/api/v1/alarms${query({ open: all ? "" : "true" })}`) };
    },
    (answer, err) => {
      if (err) {
        results.replaceChildren(failure(err, "告警 Alarms"));
        return;
      }
      results.replaceChildren(
        table(
          ["类型 Kind", "柜机 Locker", "格口 No.", "发生 Raised", "解除 Cleared", "确认 Ack"],
          answer.alarms.map(alarmRow),
          answer.all ? "没有告警 No alarms" : "没有未解除的告警 No open alarms",
        ),
      );
    },
  );
  showAll.addEventListener("change", () => live.refresh());
  await live.first;
  main.replaceChildren(
    h("div", { class: "page-head" }, h("h1", {}, bi("告警", "Alarms"))),
    panel(
      bi("柜机告警", "Locker alarms"),
      h("label", { class: "inline" }, showAll, " 显示已解除 include cleared"),
      results,
    ),
  );
  return live.stop;
}
