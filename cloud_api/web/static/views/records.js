// Approval records and their handovers (GET /api/v1/dashboard/records).

import { get, query } from "../api.js";
import { badge, bi, failure, h, panel, table, when } from "../dom.js";
import { name, tone } from "../labels.js";

const STATUSES = [
  "submitted", "prereview_passed", "documents_in_locker", "documents_received", "approved",
  "licence_in_locker", "collected", "rejected", "withdrawn",
];

// A deposited drop-off waits for staff with no deadline; the other live states have one.
function showsDeadline(ho) {
  return ho.state === "reserved" || (ho.kind === "pickup" && ho.state === "deposited");
}

export function handoverLine(ho) {
  return h(
    "li",
    { class: "handover", "data-handover-id": ho.id, "data-kind": ho.kind, "data-state": ho.state },
    badge(name(ho.kind), ho.kind === "pickup" ? "info" : "plain"),
    " ",
    badge(name(ho.state), tone(ho.state)),
    " ",
    h("span", {}, `${ho.locker_id} #${ho.compartment_number}`),
    h(
      "span",
      { class: "sub handover-times" },
      `创建 created ${when(ho.created_at)}` +
        (ho.deposited_at ? ` · 存入 in ${when(ho.deposited_at)}` : "") +
        (ho.finished_at ? ` · 结束 done ${when(ho.finished_at)}` : "") +
        (showsDeadline(ho) ? ` · 期限 until ${when(ho.expires_at)}` : ""),
    ),
  );
}

function recordRow(r) {
  return h(
    "tr",
    { "data-record": r.application_number, "data-status": r.status },
    h("td", { class: "mono" }, r.application_number),
    h("td", {}, r.applicant_name, h("div", { class: "sub" }, r.mobile)),
    h("td", {}, r.matter_name),
    h("td", {}, badge(name(r.status), tone(r.status))),
    h(
      "td",
      {},
      r.handovers.length
        ? h("ul", { class: "handovers" }, r.handovers.map(handoverLine))
        : h("span", { class: "sub" }, "无 none"),
    ),
    h("td", { class: "nowrap" }, when(r.updated_at)),
  );
}

export async function render(main) {
  const results = h("div", { id: "records-results" });
  const search = h("input", { id: "records-search", type: "search", maxlength: 64, placeholder: "编号/姓名/事项 number, name, matter" });
  const status = h(
    "select",
    { id: "records-status" },
    h("option", { value: "" }, "全部状态 every status"),
    STATUSES.map((s) => h("option", { value: s }, name(s))),
  );
  const load = async () => {
    try {
      const records = await get(`/api/v1/dashboard/records${query({ q: search.value.trim(), status: status.value, limit: 200 })}`);
      results.replaceChildren(
        table(
          ["申请编号 Number", "申请人 Applicant", "事项 Matter", "状态 Status", "交接 Handovers", "更新 Updated"],
          records.map(recordRow),
          "没有符合条件的审批件 No matching records",
        ),
      );
    } catch (err) {
      results.replaceChildren(failure(err, "审批件 Records"));
    }
  };
  const form = h(
    "form",
    { class: "filters", onsubmit: (e) => { e.preventDefault(); load(); } },
    search,
    status,
    h("button", { type: "submit", class: "primary" }, "查询 Search"),
  );
  status.addEventListener("change", load);
  main.replaceChildren(
    h("div", { class: "page-head" }, h("h1", {}, bi("审批件", "Approval records"))),
    panel(bi("审批件与交接", "Records and their handovers"), form, results),
  );
  await load();
}
