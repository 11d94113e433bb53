// Approval records: search (number, name, the mobile's last digits, status; in pages), one
// record (details, handovers, audit trail, and the moves the API allows now), a record typed
// in by hand, and a CSV batch of finished licences with its per-row report. Both pages follow
// the server without a reload (live.js) and redraw only what changed.

import { get, post, query, upload } from "../api.js";
import { badge, bi, failure, h, notice, panel, showToast, table, when } from "../dom.js";
import { name, tone } from "../labels.js";
import { drawIfChanged, watch } from "../live.js";
import { resendAction, resendButton } from "./resend_code.js";

const STATUSES = [
  "submitted", "prereview_passed", "documents_in_locker", "documents_received", "approved",
  "licence_in_locker", "collected", "rejected", "withdrawn",
];
const PAGE_SIZE = 25;
const IMPORT_MAX_BYTES = 1000000; // the server's limit too (record_import.MAX_BYTES)
const RECORD_ROLES = ["admin", "supervisor", "staff"]; // services/staff.py RECORD_WORK
const IMPORT_ROLES = ["admin", "supervisor"]; // RECORD_IMPORT

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

const recordHref = (number) => `#/records/${encodeURIComponent(number)}`;

// A 403 here means the role (a technician), not "administrators only"; on a record's page a
// 404 is a number that does not exist, not a missing feature.
function refused(err, what, one) {
  if (one && err.status === 404) {
    return notice("error", `${what}: 没有这个审批件 no such record`, { "data-missing": "true" });
  }
  if (err.status === 403) {
    return notice("muted", `${what}: 您的角色不处理审批件 your role does not work on records`, {
      "data-forbidden": "true",
    });
  }
  return failure(err, what);
}

// ---- the list ------------------------------------------------------------------------------

function recordRow(r) {
  return h(
    "tr",
    { "data-record": r.application_number, "data-status": r.status },
    h("td", { class: "mono" }, h("a", { href: recordHref(r.application_number), class: "open-record" }, r.application_number)),
    h("td", {}, r.applicant_name, h("div", { class: "sub" }, r.mobile)),
    h("td", {}, r.matter_name),
    h("td", {}, badge(name(r.status), tone(r.status))),
    h(
      "td",
      {},
      r.handovers.length
        ? h("ul", { class: "handovers" }, r.handovers.map(handoverLine))
        : h("span", { class: "sub" }, "无 none"),
      resendButton(r),
    ),
    h("td", { class: "nowrap" }, when(r.updated_at)),
  );
}

function pagerOf(page, go) {
  if (!page.total) return null;
  const last = Math.min(page.offset + page.items.length, page.total);
  const prev = h("button", { type: "button", class: "small", id: "records-prev", disabled: page.offset === 0 }, "上一页 Previous");
  const next = h("button", { type: "button", class: "small", id: "records-next", disabled: last >= page.total }, "下一页 Next");
  prev.addEventListener("click", () => go(Math.max(0, page.offset - page.limit)));
  next.addEventListener("click", () => go(page.offset + page.limit));
  return [
    prev,
    " ",
    h("span", { class: "sub", id: "records-range", "data-total": page.total }, `第 ${page.offset + 1}–${last} 条，共 ${page.total} 条 · ${page.offset + 1}–${last} of ${page.total}`),
    " ",
    next,
  ];
}

function createPanel() {
  const field = (id, label, attrs) => h("label", {}, label, h("input", { id, ...attrs }));
  const status = h(
    "select",
    { id: "new-status" },
    ["submitted", "prereview_passed"].map((s) => h("option", { value: s }, name(s))),
  );
  const error = h("p", { class: "error", id: "new-error", role: "alert", hidden: true });
  const form = h(
    "form",
    { class: "stack", id: "record-create", novalidate: true },
    field("new-number", "申请编号 Application number", { maxlength: 64, required: true }),
    field("new-applicant", "申请人 Applicant", { maxlength: 200, required: true }),
    field("new-mobile", "手机号 Mobile", { maxlength: 40, placeholder: "+8613800138000", required: true }),
    field("new-matter", "事项 Matter", { maxlength: 500, required: true }),
    h("label", {}, "状态 Status", status),
    error,
    h("button", { type: "submit", class: "primary", id: "new-submit" }, "新建 Create"),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const value = (id) => form.querySelector(`#${id}`).value.trim();
    const body = {
      application_number: value("new-number"),
      applicant_name: value("new-applicant"),
      mobile: value("new-mobile"),
      matter_name: value("new-matter"),
      status: status.value,
    };
    if (Object.values(body).some((v) => !v)) {
      error.textContent = "请填写所有项 Fill in every field";
      error.hidden = false;
      return;
    }
    try {
      const record = await post("/api/v1/staff/records", body);
      error.hidden = true;
      showToast(`已新建 Created ${record.application_number}`, "good");
      location.hash = recordHref(record.application_number);
    } catch (err) {
      error.textContent = `未能新建 Not created: ${err.message}`;
      error.hidden = false;
    }
  });
  return panel(bi("手工录入审批件", "Add a record by hand"), form);
}

const OUTCOME_TONES = { created: "good", updated: "info", unchanged: "muted", refused: "bad" };
const OUTCOME_NAMES = {
  created: "已新建 created",
  updated: "已更新 updated",
  unchanged: "未变 unchanged",
  refused: "拒绝 refused",
};

function importReport(report) {
  const counts = ["created", "updated", "unchanged", "refused"].map((o) =>
    h("span", { class: `count ${o}`, "data-outcome": o, "data-count": report[o] }, badge(`${OUTCOME_NAMES[o]} ${report[o]}`, OUTCOME_TONES[o])),
  );
  const rows = report.report.map((r) =>
    h(
      "tr",
      { "data-line": r.line, "data-outcome": r.outcome, "data-reason": r.reason || "" },
      h("td", {}, String(r.line)),
      h("td", { class: "mono" }, r.application_number ? h("a", { href: recordHref(r.application_number) }, r.application_number) : "—"),
      h("td", {}, badge(OUTCOME_NAMES[r.outcome], OUTCOME_TONES[r.outcome])),
      h("td", {}, r.status ? name(r.status) : ""),
      h("td", {}, r.message_zh ? [r.message_zh, h("div", { class: "sub" }, r.message_en)] : ""),
    ),
  );
  return [
    h("p", { class: "import-counts" }, `共 ${report.rows} 行 ${report.rows} rows: `, counts),
    report.ignored_columns.length
      ? h("p", { class: "sub" }, `未使用的列 Columns not used: ${report.ignored_columns.join(", ")}`)
      : null,
    table(["行 Line", "申请编号 Number", "结果 Outcome", "状态 Status", "原因 Why"], rows, "文件中没有数据行 The file has no rows"),
  ];
}

function importPanel(afterImport) {
  const file = h("input", { type: "file", id: "import-file", accept: ".csv,text/csv" });
  const result = h("div", { id: "import-result" });
  const button = h("button", { type: "submit", class: "primary", id: "import-submit" }, "导入 Import");
  const form = h(
    "form",
    { class: "filters", id: "record-import" },
    file,
    button,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const chosen = file.files[0];
    if (!chosen) {
      result.replaceChildren(notice("error", "请选择 CSV 文件 Choose a CSV file"));
      return;
    }
    if (chosen.size > IMPORT_MAX_BYTES) {
      result.replaceChildren(notice("error", "文件超过 1 MB，请分批导入 The file is over 1 MB: split it", { "data-reason": "too_large" }));
      return;
    }
    button.disabled = true;
    result.replaceChildren(h("p", { class: "loading" }, "导入中 Importing…"));
    try {
      const report = await upload("/api/v1/staff/records/import", await chosen.arrayBuffer(), "text/csv");
      result.replaceChildren(...importReport(report).filter(Boolean));
      showToast(`导入完成 Imported: ${report.created} new, ${report.updated} updated, ${report.refused} refused`, report.refused ? "bad" : "good");
      afterImport();
    } catch (err) {
      const p = err.problem || {};
      const text = p.message_zh ? `${p.message_zh} · ${p.message_en}` : err.message;
      result.replaceChildren(notice("error", `未导入，未作任何更改 Nothing imported, nothing changed: ${text}`, { "data-reason": p.reason || "" }));
    } finally {
      button.disabled = false;
    }
  });
  return panel(
    bi("导入已办结证照 (CSV)", "Import finished licences (CSV)"),
    h("p", { class: "sub" }, "列 Columns: 申请编号 application_number, 申请人 applicant, 手机号 mobile, 事项 matter · UTF-8 · ≤ 1 MB"),
    form,
    result,
  );
}

async function renderList(main, me) {
  const filter = { q: "", mobile: "", status: "", offset: 0 };
  const results = h("div", { id: "records-results" });
  const pager = h("div", { id: "records-pager", class: "pager" });
  const search = h("input", { id: "records-search", type: "search", maxlength: 64, placeholder: "编号/姓名/事项 number, name, matter" });
  const mobile = h("input", { id: "records-mobile", type: "search", maxlength: 11, inputmode: "numeric", placeholder: "手机尾号 mobile's last digits" });
  const status = h(
    "select",
    { id: "records-status" },
    h("option", { value: "" }, "全部状态 every status"),
    STATUSES.map((s) => h("option", { value: s }, name(s))),
  );
  const error = h("p", { class: "error", id: "records-error", role: "alert", hidden: true });
  const live = watch(
    () => get(`/api/v1/staff/records${query({ ...filter, limit: PAGE_SIZE })}`),
    (page, err) => {
      if (err) {
        results.replaceChildren(refused(err, "审批件 Records"));
        pager.replaceChildren();
        return;
      }
      results.replaceChildren(
        table(
          ["申请编号 Number", "申请人 Applicant", "事项 Matter", "状态 Status", "交接 Handovers", "更新 Updated"],
          page.items.map(recordRow),
          "没有符合条件的审批件 No matching records",
        ),
      );
      pager.replaceChildren(...[pagerOf(page, (offset) => { filter.offset = offset; live.refresh(); })].flat().filter(Boolean));
    },
  );
  const apply = () => {
    const digits = mobile.value.trim();
    if (digits && !/^\d{1,11}$/.test(digits)) {
      error.textContent = "手机尾号只能是数字 The mobile's last digits are digits only";
      error.hidden = false;
      return;
    }
    error.hidden = true;
    Object.assign(filter, { q: search.value.trim(), mobile: digits, status: status.value, offset: 0 });
    live.refresh();
  };
  const form = h(
    "form",
    { class: "filters", onsubmit: (e) => { e.preventDefault(); apply(); } },
    search,
    mobile,
    status,
    h("button", { type: "submit", class: "primary" }, "查询 Search"),
  );
  status.addEventListener("change", apply);
  await live.first;
  main.replaceChildren(
    h("div", { class: "page-head" }, h("h1", {}, bi("审批件", "Approval records"))),
    panel(bi("审批件与交接", "Records and their handovers"), form, error, results, pager),
    RECORD_ROLES.includes(me.role) ? createPanel() : null,
    IMPORT_ROLES.includes(me.role) ? importPanel(() => live.refresh()) : null,
  );
  return live.stop;
}

// ---- one record ----------------------------------------------------------------------------

const MOVE_LABELS = {
  prereview_passed: ["预审通过", "Pass pre-review"],
  documents_received: ["材料已收（窗口或邮寄）", "Documents received (window or post)"],
  approved: ["批准", "Approve"],
  collected: ["已在窗口领取", "Collected at the window"],
  rejected: ["驳回", "Reject"],
  withdrawn: ["撤回", "Withdraw"],
};
// Ending a record says why, for the applicant's sake and the audit trail.
const NEEDS_REASON = ["rejected", "withdrawn"];

function moveActions(detail, ctx) {
  if (!detail.moves.length) return null;
  const reason = h("input", { id: "move-reason", maxlength: 500, placeholder: "原因（驳回、撤回必填） reason (required to reject or withdraw)" });
  const buttons = detail.moves.map((wanted) => {
    const [zh, en] = MOVE_LABELS[wanted] || [name(wanted), wanted];
    const bad = NEEDS_REASON.includes(wanted);
    const button = h("button", { type: "button", class: bad ? "danger" : "primary", "data-move": wanted }, `${zh} ${en}`);
    button.addEventListener("click", async () => {
      const why = reason.value.trim();
      if (bad && !why) {
        showToast("请填写原因 A reason is required", "bad");
        reason.focus();
        return;
      }
      button.disabled = true;
      try {
        await post(`/api/v1/staff/records/${encodeURIComponent(detail.record.application_number)}/transitions`, why ? { status: wanted, reason: why } : { status: wanted });
        showToast(`${zh} ${en}: ${detail.record.application_number}`, "good");
      } catch (err) {
        showToast(`未能变更 Not changed: ${err.message}`, "bad");
        button.disabled = false;
      }
      await ctx.refresh();
    });
    return button;
  });
  return h("div", { class: "move-actions", id: "record-moves" }, reason, " ", buttons);
}

// What a record's page offers, each a function (detail, ctx) -> element or null, drawn in
// this order into the actions area (#record-actions), which is redrawn when the record's
// status or allowed moves change. Another action (e.g. resending a code) is one more entry.
export const RECORD_ACTIONS = [moveActions, resendAction];

function facts(record) {
  const row = (label, value) => [h("dt", {}, label), h("dd", {}, value)];
  return h(
    "dl",
    { class: "facts" },
    row("申请人 Applicant", record.applicant_name),
    row("手机号 Mobile", record.mobile),
    row("事项 Matter", record.matter_name),
    row("状态 Status", badge(name(record.status), tone(record.status), { id: "record-status", "data-status": record.status })),
    row("创建 Created", when(record.created_at)),
    row("更新 Updated", when(record.updated_at)),
  );
}

function auditTable(entries) {
  return table(
    ["序号 Seq", "时间 Time", "操作人 Actor", "动作 Action", "对象 Subject", "详情 Detail"],
    entries.map((e) =>
      h(
        "tr",
        { "data-seq": e.seq, "data-action": e.action },
        h("td", {}, String(e.seq)),
        h("td", { class: "nowrap" }, when(e.at)),
        h("td", {}, e.actor),
        h("td", {}, e.action),
        h("td", { class: "mono" }, e.subject),
        h("td", { class: "mono" }, JSON.stringify(e.detail).slice(0, 160)),
      ),
    ),
    "尚无记录 No entries",
  );
}

async function renderDetail(main, number, me) {
  const back = h("a", { href: "#/records", class: "back" }, "← 全部审批件 All records");
  const title = h("h1", { id: "record-title" });
  const factsEl = h("div", { id: "record-facts" });
  const actions = h("div", { id: "record-actions", class: "actions" });
  const handoversEl = h("div", { id: "record-handovers" });
  const auditEl = h("div", { id: "record-audit" });
  const problem = h("div", { id: "record-problem" });
  const ctx = { me, refresh: () => live.refresh() };
  const live = watch(
    () => get(`/api/v1/staff/records/${encodeURIComponent(number)}`),
    (detail, err) => {
      if (err) {
        problem.replaceChildren(refused(err, `审批件 Record ${number}`, true));
        return;
      }
      problem.replaceChildren();
      drawIfChanged(title, detail.record.application_number, (n) => [n, " ", h("span", { class: "en" }, "approval record")]);
      drawIfChanged(factsEl, detail.record, facts);
      drawIfChanged(actions, { status: detail.record.status, moves: detail.moves }, () =>
        RECORD_ACTIONS.map((action) => action(detail, ctx)),
      );
      drawIfChanged(handoversEl, detail.handovers, (list) =>
        list.length ? h("ul", { class: "handovers" }, list.map(handoverLine)) : h("p", { class: "empty" }, "尚无交接 No handovers yet"),
      );
      drawIfChanged(auditEl, detail.audit, auditTable);
    },
  );
  await live.first;
  main.replaceChildren(
    h("div", { class: "page-head" }, back, title),
    problem,
    panel(bi("审批件", "Record"), factsEl, actions),
    panel(bi("交接", "Handovers"), handoversEl),
    panel(bi("电子监察记录", "Audit trail"), auditEl),
  );
  return live.stop;
}

export async function render(main, { me, args }) {
  if (args[0]) return renderDetail(main, args[0], me);
  return renderList(main, me);
}
