// Staff accounts (administrators): who they are, role and site, and their life: deactivate
// (tokens end at once, cabinets drop them at the next sync), activate, reset the second
// factor (lost phone). Every change is audited by the API.

import { get, post } from "../api.js";
import { badge, bi, failure, h, notice, panel, showToast, table } from "../dom.js";

const ROLES = {
  admin: "管理员 admin",
  supervisor: "站点主管 supervisor",
  staff: "工作人员 staff",
  technician: "技术员 technician",
};

export async function render(main, { me }) {
  const list = h("div", { id: "staff-list" });
  const result = h("div", { id: "staff-result" });

  const act = async (member, action, question) => {
    if (!window.confirm(question)) return;
    try {
      await post(`/api/v1/staff/${member.id}/${action}`);
      showToast(`${member.username}: ${action}`, "good");
      await load();
    } catch (err) {
      result.replaceChildren(notice("error", `${member.username}: ${err.message}`, { id: "staff-error" }));
    }
  };

  const row = (m) =>
    h(
      "tr",
      { "data-staff-id": m.id, "data-username": m.username, "data-active": String(m.active) },
      h("td", {}, m.username),
      h("td", {}, ROLES[m.role] || m.role),
      h("td", {}, m.site || "全部站点 every site"),
      h("td", {}, m.totp_enabled ? badge("已启用 on", "good") : badge("未启用 off", "warn")),
      h("td", {}, m.active ? badge("在用 active", "good") : badge("已停用 deactivated", "bad")),
      h(
        "td",
        { class: "nowrap" },
        m.username === me.username
          ? ""
          : [
              m.active
                ? h("button", { type: "button", class: "danger", "data-action": "deactivate", onclick: () => act(m, "deactivate", `停用 ${m.username}? Deactivate ${m.username}: their sessions end now, cabinets drop them.`) }, "停用 Deactivate")
                : h("button", { type: "button", "data-action": "activate", onclick: () => act(m, "activate", `启用 ${m.username}? Activate ${m.username}?`) }, "启用 Activate"),
              " ",
              h("button", { type: "button", "data-action": "totp/reset", onclick: () => act(m, "totp/reset", `重置 ${m.username} 的动态码? Reset ${m.username}'s second factor: they enrol again.`) }, "重置动态码 Reset TOTP"),
            ],
      ),
    );

  const load = async () => {
    try {
      const rows = await get("/api/v1/staff?limit=500");
      list.replaceChildren(
        table(["用户名 User", "角色 Role", "站点 Site", "动态码 TOTP", "状态 State", ""], rows.map(row), "暂无 No accounts"),
      );
    } catch (err) {
      list.replaceChildren(failure(err, "工作人员 Staff"));
    }
  };

  main.replaceChildren(
    h("div", { class: "page-head" }, h("h1", {}, bi("工作人员", "Staff accounts"))),
    panel(bi("账户", "Accounts"), list, result),
  );
  await load();
}
