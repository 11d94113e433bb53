// Staff pass: what staff type at a cabinet's kiosk (with their staff number) for one shift.
// The cabinet checks it with its own key, off line too; it works at that cabinet only.

import { post, get } from "../api.js";
import { bi, h, notice, panel, when } from "../dom.js";

export async function render(main, { me }) {
  const lockers = await get("/api/v1/lockers?limit=500");
  const result = h("div", { id: "pass-result" });
  const locker = h(
    "select",
    { id: "pass-locker" },
    lockers.map((l) => h("option", { value: l.id }, `${l.id} · ${l.site}`)),
  );
  const button = h("button", { type: "submit", class: "primary", id: "pass-submit" }, "领取工作证码 Get a staff pass");

  const submit = async (event) => {
    event.preventDefault();
    if (!locker.value) {
      result.replaceChildren(notice("error", "请选择柜机 Choose a locker", { id: "pass-error" }));
      return;
    }
    button.disabled = true;
    try {
      const issued = await post("/api/v1/staff/me/passes", { locker_id: locker.value });
      result.replaceChildren(
        h(
          "div",
          { class: "card", id: "pass-issued", "data-locker": issued.locker_id },
          h("p", {}, `柜机 Cabinet ${issued.locker_id} · 工号 Staff number `, h("b", { id: "pass-staff-no" }, issued.staff_no)),
          h("p", { class: "big-code", id: "pass-code" }, issued.staff_pass),
          h("p", { class: "sub" }, `有效至 Valid until ${when(issued.valid_until)} · 仅限此柜机 this cabinet only`),
        ),
      );
    } catch (err) {
      const why =
        err.status === 403
          ? "需要用密码和动态码登录，且柜机属于您的站点 Needs a log-in with password and one-time code, at a cabinet of your site"
          : err.message;
      result.replaceChildren(notice("error", `无法领取 No pass: ${why}`, { id: "pass-error" }));
    } finally {
      button.disabled = false;
    }
  };

  main.replaceChildren(
    h("div", { class: "page-head" }, h("h1", {}, bi("工作证码", "Staff pass"))),
    panel(
      bi("柜机上的工作人员登录", "Staff log-in at a cabinet"),
      h(
        "p",
        { class: "sub" },
        `在柜机上输入工号 ${me.username} 和此证码。At the cabinet's kiosk (Staff), type your staff number and this pass; it works at that cabinet only, for this shift. Each pass is recorded in the audit trail.`,
      ),
      h(
        "form",
        { class: "stack", id: "pass-form", novalidate: true, onsubmit: submit },
        h("label", {}, "柜机 Cabinet", locker),
        button,
      ),
      result,
    ),
  );
}
