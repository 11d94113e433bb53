// Webhooks to integrators (administrators): subscribers per API key, the event outbox with its
// dead letters, and their replay. A subscriber's secret is shown once, right after creation.
// Every change is audited by the API (docs/integrators.md).

import { get, post, api, query } from "../api.js";
import { badge, bi, failure, h, notice, panel, showToast, table, when } from "../dom.js";
import { name, tone } from "../labels.js";

const STATUSES = ["dead", "pending", "sending", "delivered"];

function subscriberRow(s, toggle) {
  return h(
    "tr",
    { "data-subscriber-id": s.id, "data-active": String(s.active) },
    h("td", {}, s.name, h("div", { class: "sub" }, `#${s.id} · 密钥 key ${s.api_key_id}`)),
    h("td", { class: "mono" }, s.url),
    h("td", {}, s.include_codes ? badge("含开箱码 with codes", "warn") : badge("不含 no codes", "muted")),
    h("td", {}, s.active ? badge("在用 active", "good") : badge("已停用 disabled", "bad")),
    h(
      "td",
      { class: "nowrap" },
      h(
        "button",
        { type: "button", class: "small", "data-action": s.active ? "disable" : "enable", onclick: () => toggle(s) },
        s.active ? "停用 Disable" : "启用 Enable",
      ),
    ),
  );
}

function eventRow(e, replay) {
  return h(
    "tr",
    { "data-event-pk": e.id, "data-event-id": e.event_id, "data-status": e.status, "data-type": e.type },
    h("td", { class: "nowrap" }, when(e.occurred_at)),
    h("td", {}, e.type, h("div", { class: "sub mono" }, e.event_id)),
    h("td", {}, e.application_number || "—"),
    h("td", {}, `#${e.subscriber_id}`),
    h("td", {}, badge(name(e.status), tone(e.status))),
    h("td", {}, String(e.attempts), e.replays ? h("div", { class: "sub" }, `重发 replayed ${e.replays}`) : ""),
    h("td", { class: "sub" }, e.last_error || ""),
    h(
      "td",
      { class: "nowrap" },
      e.status === "dead"
        ? h("button", { type: "button", class: "small primary", "data-action": "replay", onclick: () => replay(e) }, "重发 Replay")
        : "",
    ),
  );
}

function createForm(keys, onCreated) {
  const result = h("div", { id: "webhook-created" });
  const key = h(
    "select",
    { id: "webhook-key", name: "api_key_id" },
    keys.filter((k) => k.active).map((k) => h("option", { value: k.id }, `${k.id} · ${k.name} (${k.scopes.join(" ")})`)),
  );
  const label = h("input", { id: "webhook-name", name: "name", maxlength: 200, placeholder: "审批系统 approval system" });
  const url = h("input", { id: "webhook-url", name: "url", maxlength: 2000, placeholder: "https://…/hooks/xinbao" });
  const codes = h("input", { id: "webhook-codes", name: "include_codes", type: "checkbox" });
  const submit = async (event) => {
    event.preventDefault();
    try {
      const created = await post("/api/v1/webhooks/subscribers", {
        api_key_id: Number(key.value),
        name: label.value.trim(),
        url: url.value.trim(),
        include_codes: codes.checked,
      });
      result.replaceChildren(
        notice(
          "good",
          `签名密钥（仅显示这一次）Signing secret, shown only this once: ${created.secret}`,
          { id: "webhook-secret", "data-subscriber-id": created.id },
        ),
      );
      url.value = "";
      await onCreated();
    } catch (err) {
      result.replaceChildren(notice("error", `无法添加 Cannot add: ${err.message}`, { id: "webhook-error" }));
    }
  };
  return h(
    "form",
    { class: "stack", id: "webhook-form", novalidate: true, onsubmit: submit },
    h("label", {}, "接口密钥 Integrator API key", key),
    h("label", {}, "名称 Name", label),
    h("label", {}, "推送地址 URL (http/https)", url),
    h("label", {}, codes, " code.issued 事件携带开箱码（需 codes:read）Send codes in code.issued (needs codes:read)"),
    h("button", { type: "submit", class: "primary", id: "webhook-submit" }, "添加 Add subscriber"),
    result,
  );
}

export async function render(main) {
  const subscribers = h("div", { id: "webhook-subscribers" });
  const outbox = h("div", { id: "webhook-events" });
  const status = h(
    "select",
    { id: "webhook-status" },
    STATUSES.map((s) => h("option", { value: s }, s === "dead" ? "死信 dead letters" : name(s))),
    h("option", { value: "" }, "全部 every status"),
  );

  const loadSubscribers = async () => {
    try {
      const rows = await get("/api/v1/webhooks/subscribers?limit=500");
      subscribers.replaceChildren(
        table(["名称 Name", "地址 URL", "开箱码 Codes", "状态 State", ""], rows.map((s) => subscriberRow(s, toggle)), "暂无订阅者 No subscribers"),
      );
    } catch (err) {
      subscribers.replaceChildren(failure(err, "订阅者 Subscribers"));
    }
  };
  const loadEvents = async () => {
    try {
      const rows = await get(`/api/v1/webhooks/events${query({ status: status.value, limit: 200 })}`);
      outbox.replaceChildren(
        table(
          ["时间 Time", "事件 Event", "审批件 Record", "订阅者 Subscriber", "状态 Status", "尝试 Tries", "错误 Error", ""],
          rows.map((e) => eventRow(e, replay)),
          status.value === "dead" ? "没有死信 No dead letters" : "暂无事件 No events",
        ),
      );
    } catch (err) {
      outbox.replaceChildren(failure(err, "事件 Events"));
    }
  };
  async function toggle(s) {
    try {
      await api("PATCH", `/api/v1/webhooks/subscribers/${s.id}`, { active: !s.active });
      showToast(`${s.name}: ${s.active ? "已停用 disabled" : "已启用 enabled"}`, "good");
    } catch (err) {
      showToast(`${s.name}: ${err.message}`, "bad");
    }
    await loadSubscribers();
  }
  async function replay(e) {
    if (!window.confirm(`重发事件 ${e.type}（${e.application_number}）? Replay this dead letter to subscriber #${e.subscriber_id}?`)) return;
    try {
      await post(`/api/v1/webhooks/events/${e.id}/replay`);
      showToast("已重新排队 Queued again", "good");
    } catch (err) {
      showToast(`无法重发 Cannot replay: ${err.message}`, "bad");
    }
    await loadEvents();
  }
  status.addEventListener("change", loadEvents);

  let keys = [];
  try {
    keys = await get("/api/v1/api-keys?limit=500");
  } catch (err) {
    main.replaceChildren(
      h("div", { class: "page-head" }, h("h1", {}, bi("推送", "Webhooks"))),
      panel(bi("推送", "Webhooks"), failure(err, "推送 Webhooks")),
    );
    return;
  }
  main.replaceChildren(
    h("div", { class: "page-head" }, h("h1", {}, bi("推送", "Webhooks")), h("p", { class: "sub" }, "审批系统订阅的签名事件 Signed events for the approval systems (docs/integrators.md)")),
    panel(bi("订阅者", "Subscribers"), subscribers),
    panel(bi("添加订阅者", "Add a subscriber"), createForm(keys, loadSubscribers)),
    panel(
      bi("事件与死信", "Events and dead letters"),
      h("p", { class: "sub" }, "不显示事件正文（可能含开箱码）。Bodies are not shown: they may carry codes."),
      h("div", { class: "filters" }, status),
      outbox,
    ),
  );
  await Promise.all([loadSubscribers(), loadEvents()]);
}
