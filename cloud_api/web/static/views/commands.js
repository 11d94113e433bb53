// Commands sent to lockers and what became of them (ok / failed / timeout / still waiting),
// and a runtime setting changed on one locker (a signed `config` command, audited).

import { get, post, query } from "../api.js";
import { badge, bi, failure, h, notice, panel, showToast, table, when } from "../dom.js";
import { name, tone } from "../labels.js";

const STATUSES = ["sent", "ok", "failed", "timeout"];
// The runtime settings a locker accepts (xinbao.contract.RUNTIME_SETTINGS), with a hint.
const SETTINGS = {
  door_left_open_after_s: "门未关告警秒数 seconds before 'door left open'",
  lockout_threshold: "错误码锁定次数 wrong codes before lockout",
  poll_interval_s: "锁板轮询间隔秒 bus poll interval (s)",
};

function outcome(c) {
  if (c.error) return c.error;
  if (!c.result) return "";
  const shown = { ...c.result };
  delete shown.digest;
  return JSON.stringify(shown).slice(0, 160);
}

function commandRow(c) {
  return h(
    "tr",
    { "data-request-id": c.request_id, "data-type": c.type, "data-status": c.status },
    h("td", { class: "nowrap" }, when(c.issued_at)),
    h("td", {}, c.locker_id),
    h("td", { class: "mono" }, c.type),
    h("td", {}, badge(name(c.status === "sent" ? "waiting" : c.status), tone(c.status === "sent" ? "pending" : c.status))),
    h("td", { class: "nowrap" }, when(c.replied_at)),
    h("td", { class: "mono sub" }, outcome(c)),
  );
}

export async function render(main) {
  const lockers = await get("/api/v1/lockers?limit=500");
  const results = h("div", { id: "commands-results" });
  const status = h(
    "select",
    { id: "commands-status" },
    h("option", { value: "" }, "全部 every status"),
    STATUSES.map((s) => h("option", { value: s }, name(s === "sent" ? "waiting" : s))),
  );
  const load = async () => {
    try {
      const rows = await get(`/api/v1/commands${query({ status: status.value, limit: 200 })}`);
      results.replaceChildren(
        table(
          ["发出 Sent", "柜机 Locker", "指令 Command", "结果 Outcome", "回复 Replied", "详情 Detail"],
          rows.map(commandRow),
          "尚未发出指令 No commands sent yet",
        ),
      );
    } catch (err) {
      results.replaceChildren(failure(err, "指令 Commands"));
    }
  };
  status.addEventListener("change", load);

  const result = h("div", { id: "config-result" });
  const locker = h("select", { id: "config-locker" }, lockers.map((l) => h("option", { value: l.id }, `${l.id} · ${l.site}`)));
  const setting = h("select", { id: "config-setting" }, Object.entries(SETTINGS).map(([k, v]) => h("option", { value: k }, `${k} · ${v}`)));
  const value = h("input", { id: "config-value", type: "number", step: "any", required: true });
  const button = h("button", { type: "submit", class: "primary", id: "config-submit" }, "发送 Send");
  const submit = async (event) => {
    event.preventDefault();
    const number = Number(value.value);
    if (value.value.trim() === "" || !Number.isFinite(number)) {
      result.replaceChildren(notice("error", "请输入数值 Enter a number", { id: "config-error" }));
      return;
    }
    button.disabled = true;
    result.replaceChildren(notice("muted", "正在发送… Sending…"));
    try {
      const c = await post(`/api/v1/lockers/${encodeURIComponent(locker.value)}/config`, {
        settings: { [setting.value]: number },
      });
      const good = c.status === "ok";
      result.replaceChildren(
        notice(good ? "good" : "error", `${c.locker_id} ${setting.value} = ${number}: ${name(c.status)}${c.error ? ` (${c.error})` : ""}`, {
          id: "config-outcome",
          "data-status": c.status,
          "data-request-id": c.request_id,
        }),
      );
      showToast(good ? "柜机已应用 The locker applied it" : `结果 Outcome: ${name(c.status)}`, good ? "good" : "");
      await load();
    } catch (err) {
      result.replaceChildren(notice("error", `未发送 Not sent: ${err.message}`, { id: "config-error" }));
    } finally {
      button.disabled = false;
    }
  };

  main.replaceChildren(
    h("div", { class: "page-head" }, h("h1", {}, bi("指令", "Commands"))),
    panel(
      bi("修改柜机设置", "Change a locker setting"),
      h("p", { class: "sub" }, "设置经签名指令下发并记入电子监察。Sent as a signed command and recorded in the audit trail."),
      h(
        "form",
        { class: "stack", id: "config-form", novalidate: true, onsubmit: submit },
        h("label", {}, "柜机 Locker", locker),
        h("label", {}, "设置 Setting", setting),
        h("label", {}, "数值 Value", value),
        button,
      ),
      result,
    ),
    panel(bi("已发出的指令", "Commands sent"), h("div", { class: "filters" }, status), results),
  );
  await load();
  const timer = setInterval(() => {
    if (document.visibilityState === "visible") load();
  }, 10000);
  return () => clearInterval(timer);
}
