// Remote open: one door, with a reason (audited). The API answers with the request and its
// outcome (opened / jammed / no_response / rejected / timeout, or pending without MQTT).

import { get, post } from "../api.js";
import { badge, bi, failure, h, notice, panel, showToast, table, when } from "../dom.js";
import { name, tone } from "../labels.js";

function outcomeText(request) {
  return (
    `远程开门 Remote open ${request.locker_id} #${request.compartment_number}: ` +
    name(request.status)
  );
}

function historyRow(r) {
  return h(
    "tr",
    { "data-remote-open-id": r.id, "data-status": r.status },
    h("td", { class: "nowrap" }, when(r.created_at)),
    h("td", {}, `${r.locker_id} #${r.compartment_number}`),
    h("td", {}, r.reason),
    h("td", {}, badge(name(r.status), tone(r.status))),
    h("td", { class: "sub" }, r.detail || r.error || ""),
  );
}

export async function render(main) {
  const lockers = await get("/api/v1/lockers?limit=500");
  const history = h("div", { id: "remote-history" });
  const result = h("div", { id: "remote-result" });
  const locker = h(
    "select",
    { id: "remote-locker" },
    lockers.map((l) => h("option", { value: l.id }, `${l.id} · ${l.site}`)),
  );
  const compartment = h("select", { id: "remote-compartment" });
  const reason = h("textarea", {
    id: "remote-reason",
    rows: 3,
    maxlength: 500,
    placeholder: "例如：申请人来电，验证身份后远程开门 e.g. applicant on the phone, identity checked",
  });
  const button = h("button", { type: "submit", class: "danger", id: "remote-submit" }, "远程开门 Open remotely");

  const loadCompartments = async () => {
    compartment.replaceChildren();
    if (!locker.value) return;
    try {
      const detail = await get(`/api/v1/lockers/${encodeURIComponent(locker.value)}`);
      compartment.replaceChildren(
        ...detail.compartments.map((c) =>
          h("option", { value: c.number }, `#${c.number} · ${c.size} · ${c.out_of_service ? "停用 out of service" : name(c.state)}`),
        ),
      );
    } catch (err) {
      result.replaceChildren(failure(err, "格口 Compartments"));
    }
  };
  const loadHistory = async () => {
    try {
      const rows = await get("/api/v1/staff/remote-opens?limit=50");
      history.replaceChildren(
        table(["时间 Time", "格口 Compartment", "原因 Reason", "结果 Outcome", ""], rows.map(historyRow), "暂无记录 No remote opens yet"),
      );
    } catch (err) {
      history.replaceChildren(failure(err, "记录 History"));
    }
  };

  const submit = async (event) => {
    event.preventDefault();
    const text = reason.value.trim();
    if (!text) {
      result.replaceChildren(notice("error", "必须填写原因 A reason is required for a remote open", { id: "remote-error" }));
      reason.focus();
      return;
    }
    if (!locker.value || !compartment.value) {
      result.replaceChildren(notice("error", "请选择柜机和格口 Choose a locker and a compartment", { id: "remote-error" }));
      return;
    }
    button.disabled = true;
    result.replaceChildren(notice("muted", "正在发送开门指令… Sending the open command…"));
    try {
      const request = await post("/api/v1/staff/remote-opens", {
        locker_id: locker.value,
        compartment_number: Number(compartment.value),
        reason: text,
      });
      const good = request.status === "opened";
      const pending = request.status === "pending";
      result.replaceChildren(
        notice(good ? "good" : pending ? "muted" : "error", outcomeText(request), {
          id: "remote-outcome",
          "data-status": request.status,
          "data-remote-open-id": request.id,
        }),
      );
      showToast(good ? "门已打开 Door opened" : `结果 Outcome: ${name(request.status)}`, good ? "good" : "");
      reason.value = "";
      await loadHistory();
    } catch (err) {
      result.replaceChildren(notice("error", `远程开门失败 Remote open refused: ${err.message}`, { id: "remote-error" }));
    } finally {
      button.disabled = false;
    }
  };

  locker.addEventListener("change", loadCompartments);
  main.replaceChildren(
    h("div", { class: "page-head" }, h("h1", {}, bi("远程开门", "Remote open"))),
    panel(
      bi("打开一个格口", "Open one door"),
      h(
        "p",
        { class: "sub" },
        "每次远程开门都记入电子监察。Every remote open is recorded in the audit trail with your name and reason.",
      ),
      h(
        "form",
        { class: "stack", id: "remote-form", novalidate: true, onsubmit: submit },
        h("label", {}, "柜机 Locker", locker),
        h("label", {}, "格口 Compartment", compartment),
        h("label", {}, "原因（必填） Reason (required)", reason),
        button,
      ),
      result,
    ),
    panel(bi("最近的远程开门", "Recent remote opens"), history),
  );
  await Promise.all([loadCompartments(), loadHistory()]);
}
