// The SMS outbox (no bodies: they would hold codes) and, with the console provider of the
// demo, the console inbox of what was "sent".

import { get, query } from "../api.js";
import { badge, bi, failure, h, notice, panel, table, when } from "../dom.js";
import { name, tone } from "../labels.js";

const STATUSES = ["pending", "sending", "sent", "delivered", "failed", "undelivered", "dead"];

function outboxRow(m) {
  return h(
    "tr",
    { "data-sms-id": m.id, "data-template": m.template, "data-status": m.status },
    h("td", { class: "nowrap" }, when(m.created_at)),
    h("td", { class: "mono" }, m.to_number),
    h("td", {}, m.template),
    h("td", {}, m.locker_id || "—", m.handover_id ? h("div", { class: "sub" }, `交接 handover ${m.handover_id}`) : ""),
    h("td", {}, badge(name(m.status), tone(m.status))),
    h("td", {}, String(m.attempts)),
    h("td", { class: "nowrap" }, when(m.sent_at)),
    h("td", { class: "sub" }, m.last_error || ""),
  );
}

async function inboxPanel() {
  const title = bi("演示收件箱", "Console inbox (demo)");
  try {
    const messages = await get("/api/v1/sms/console-inbox?limit=50");
    return panel(
      title,
      h("div", { id: "sms-inbox" }, table(
        ["时间 Time", "收件人 To", "内容 Body"],
        messages.map((m) =>
          h("tr", {}, h("td", { class: "nowrap" }, when(m.sent_at)), h("td", { class: "mono" }, m.to), h("td", { class: "sms-body" }, m.body)),
        ),
        "控制台尚未发送短信 The console has sent nothing yet",
      )),
    );
  } catch (err) {
    if (err.status === 404) {
      return panel(title, notice("muted", "真实短信服务在用，无演示收件箱 A real SMS provider is in use: no console inbox", { id: "sms-inbox", "data-unavailable": "true" }));
    }
    if (err.status === 403) {
      return panel(title, notice("muted", "仅管理员可查看演示收件箱 Only administrators see the console inbox", { id: "sms-inbox", "data-unavailable": "true" }));
    }
    return panel(title, failure(err, "收件箱 Inbox"));
  }
}

export async function render(main) {
  const results = h("div", { id: "sms-outbox" });
  const status = h(
    "select",
    { id: "sms-status" },
    h("option", { value: "" }, "全部 every status"),
    STATUSES.map((s) => h("option", { value: s }, name(s))),
  );
  const load = async () => {
    try {
      const messages = await get(`/api/v1/sms/outbox${query({ status: status.value, limit: 200 })}`);
      results.replaceChildren(
        table(
          ["创建 Created", "收件人 To", "模板 Template", "柜机 Locker", "状态 Status", "尝试 Tries", "发送 Sent", "错误 Error"],
          messages.map(outboxRow),
          "发件箱为空 The outbox is empty",
        ),
      );
    } catch (err) {
      results.replaceChildren(failure(err, "发件箱 Outbox"));
    }
  };
  status.addEventListener("change", load);
  main.replaceChildren(
    h("div", { class: "page-head" }, h("h1", {}, bi("短信", "SMS"))),
    panel(
      bi("发件箱", "Outbox"),
      h("p", { class: "sub" }, "发件箱不保存短信正文（含开箱码）。The outbox never stores message bodies: they carry codes."),
      h("div", { class: "filters" }, status),
      results,
    ),
    await inboxPanel(),
  );
  await load();
}
