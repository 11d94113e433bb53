// Staff tasks: overdue pickups to recover, and drop-offs waiting to be collected. Each names
// the locker and the compartment (its number, as on the door) where the item is. The lists
// follow the server (live.js) and are redrawn only when they change, so a button does not
// move from under a finger.

import { get, post } from "../api.js";
import { badge, bi, failure, h, panel, showToast, table, when } from "../dom.js";
import { name, tone } from "../labels.js";
import { drawIfChanged, watch } from "../live.js";

function row(ho, action, refresh) {
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
    refresh();
  });
  return h(
    "tr",
    { "data-handover-id": ho.id, "data-compartment": ho.compartment_number },
    h("td", { class: "mono" }, ho.application_number),
    h("td", {}, ho.locker_id),
    h("td", { class: "compartment-no" }, `${ho.compartment_number} 号 No. ${ho.compartment_number}`),
    h("td", {}, badge(name(ho.state), tone(ho.state))),
    h("td", { class: "nowrap" }, when(ho.deposited_at)),
    // A drop-off waits for staff with no deadline; an overdue pickup shows when it fell due.
    action.path === "recover" ? h("td", { class: "nowrap" }, when(ho.expires_at)) : null,
    h("td", {}, button),
  );
}

function section(spec, refresh) {
  const body = h("div", { id: spec.id });
  const headers = [
    "申请编号 Number",
    "柜机 Locker",
    "格口 Compartment",
    "状态 State",
    "存入 Deposited",
    spec.action.path === "recover" ? "到期 Fell due" : null,
    "",
  ].filter((x) => x !== null);
  const draw = (found, err) => {
    if (err) {
      drawIfChanged(body, `error:${err.message}`, () => failure(err, spec.title[0]));
      return;
    }
    drawIfChanged(body, found, () =>
      table(headers, found.map((ho) => row(ho, spec.action, refresh)), spec.empty),
    );
  };
  return { element: panel(spec.title, body), draw };
}

const SECTIONS = [
  {
    path: "/api/v1/staff/dropoffs-waiting?limit=500",
    title: bi("待收取的投递材料", "Drop-offs waiting to be collected"),
    action: { path: "collect", label: "已收取 Collected", done: "已收取 Collected" },
    empty: "没有待收取的材料 No drop-offs waiting",
    id: "dropoffs",
  },
  {
    path: "/api/v1/staff/recovery-tasks?limit=500",
    title: bi("逾期待回收", "Overdue pickups to recover"),
    action: { path: "recover", label: "已回收 Recovered", done: "已回收 Recovered" },
    empty: "没有逾期件 Nothing overdue",
    id: "recovery",
  },
];

export async function render(main) {
  const watches = SECTIONS.map((spec) => {
    let live = null;
    const shown = section(spec, () => live.refresh());
    live = watch(() => get(spec.path), shown.draw);
    return { shown, live };
  });
  await Promise.all(watches.map((w) => w.live.first));
  main.replaceChildren(
    h("div", { class: "page-head" }, h("h1", {}, bi("待办", "Tasks"))),
    ...watches.map((w) => w.shown.element),
  );
  return () => watches.forEach((w) => w.live.stop());
}
