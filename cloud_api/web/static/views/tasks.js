// Staff tasks: overdue pickups to recover, and drop-offs waiting to be collected.

import { get, post } from "../api.js";
import { badge, bi, failure, h, panel, showToast, table, when } from "../dom.js";
import { name, tone } from "../labels.js";

function row(ho, action) {
  const button = h("button", { type: "button", class: "small", "data-action": action.path }, action.label);
  button.addEventListener("click", async () => {
    button.disabled = true;
    try {
      await post(`/api/v1/staff/handovers/${ho.id}/${action.path}`);
      showToast(action.done, "good");
      button.closest("tr").remove();
    } catch (err) {
      showToast(`失败 Failed: ${err.message}`, "bad");
      button.disabled = false;
    }
  });
  return h(
    "tr",
    { "data-handover-id": ho.id },
    h("td", { class: "mono" }, ho.application_number),
    h("td", {}, `${ho.locker_id} #${ho.compartment_number}`),
    h("td", {}, badge(name(ho.state), tone(ho.state))),
    h("td", { class: "nowrap" }, when(ho.deposited_at)),
    // A drop-off waits for staff with no deadline; an overdue pickup shows when it fell due.
    action.path === "recover" ? h("td", { class: "nowrap" }, when(ho.expires_at)) : null,
    h("td", {}, button),
  );
}

async function section(path, title, action, empty, id) {
  try {
    const found = await get(path);
    return panel(
      title,
      h(
        "div",
        { id },
        table(
          [
            "申请编号 Number",
            "格口 Compartment",
            "状态 State",
            "存入 Deposited",
            action.path === "recover" ? "到期 Fell due" : null,
            "",
          ].filter((x) => x !== null),
          found.map((ho) => row(ho, action)),
          empty,
        ),
      ),
    );
  } catch (err) {
    return panel(title, failure(err, title[0]));
  }
}

export async function render(main) {
  const [dropoffs, recovery] = await Promise.all([
    section(
      "/api/v1/staff/dropoffs-waiting?limit=500",
      bi("待收取的投递材料", "Drop-offs waiting to be collected"),
      { path: "collect", label: "已收取 Collected", done: "已收取 Collected" },
      "没有待收取的材料 No drop-offs waiting",
      "dropoffs",
    ),
    section(
      "/api/v1/staff/recovery-tasks?limit=500",
      bi("逾期待回收", "Overdue pickups to recover"),
      { path: "recover", label: "已回收 Recovered", done: "已回收 Recovered" },
      "没有逾期件 Nothing overdue",
      "recovery",
    ),
  ]);
  main.replaceChildren(h("div", { class: "page-head" }, h("h1", {}, bi("待办", "Tasks"))), dropoffs, recovery);
}
