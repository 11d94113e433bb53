// Applicants' ratings (满意度评价) per site and week, and the newest comments
// (GET /api/v1/dashboard/ratings: supervisors and administrators; others see "not allowed").
// Comments are the public's free text: they go in as text nodes only (dom.js h()).

import { get, query } from "../api.js";
import { bi, failure, h, notice, panel, table, when } from "../dom.js";

const WEEKS = [4, 8, 12, 26];
const LEVELS = [
  ["good", "好 good", "good"],
  ["fair", "中 fair", "warn"],
  ["poor", "差 poor", "bad"],
];

function stars(score) {
  return "★".repeat(score) + "☆".repeat(5 - score);
}

function distribution(group) {
  const most = Math.max(1, ...Object.values(group.distribution));
  return h(
    "div",
    { class: "dist" },
    [5, 4, 3, 2, 1].map((s) => {
      const n = group.distribution[String(s)] || 0;
      return h(
        "div",
        { class: "dist-row", "data-score": s, "data-count": n },
        h("span", { class: "dist-label" }, `${s}★`),
        h("span", { class: "dist-track" }, h("span", { class: "dist-fill", style: `width: ${(100 * n) / most}%` })),
        h("span", { class: "dist-count" }, String(n)),
      );
    }),
  );
}

function weekRow(group) {
  return h(
    "tr",
    { "data-site": group.site, "data-week": group.week_start },
    h("td", { class: "nowrap" }, group.week_start),
    h("td", {}, group.site),
    h("td", { class: "count" }, String(group.count)),
    h("td", { class: "average nowrap" }, h("span", { class: "rating-stars" }, stars(Math.round(group.average))), ` ${group.average.toFixed(2)}`),
    h("td", {}, distribution(group)),
    h(
      "td",
      { class: "levels" },
      LEVELS.map(([key, label, tone]) =>
        h("span", { class: `badge ${tone}`, "data-level": key }, `${label} ${group.levels[key]}`),
      ),
    ),
  );
}

function commentRow(c) {
  return h(
    "tr",
    { "data-rating-id": c.id, "data-handover-id": c.handover_id },
    h("td", { class: "nowrap" }, when(c.submitted_at)),
    h("td", {}, c.site, h("div", { class: "sub" }, c.locker_id)),
    h("td", { class: "mono" }, c.application_number),
    h("td", { class: "nowrap" }, h("span", { class: "rating-stars" }, stars(c.score))),
    h("td", { class: "rating-comment" }, c.comment),
  );
}

export async function render(main, { me }) {
  const weekly = h("div", { id: "ratings-weeks" });
  const comments = h("div", { id: "ratings-comments" });
  const weeks = h(
    "select",
    { id: "ratings-period" },
    WEEKS.map((n) => h("option", { value: n, selected: n === 8 }, `最近 ${n} 周 last ${n} weeks`)),
  );
  const site = h("input", {
    id: "ratings-site",
    type: "search",
    maxlength: 200,
    placeholder: me && me.site ? me.site : "站点（全部）site (all)",
  });
  const load = async () => {
    try {
      const summary = await get(
        `/api/v1/dashboard/ratings${query({ weeks: weeks.value, site: site.value.trim(), comments: 50 })}`,
      );
      weekly.replaceChildren(
        table(
          ["周（起） Week of", "站点 Site", "数量 Count", "平均 Average", "分布 Distribution", "好/中/差 Levels"],
          summary.groups.map(weekRow),
          "这段时间没有评价 No ratings in this period",
        ),
      );
      comments.replaceChildren(
        table(
          ["时间 Time", "站点 Site", "申请编号 Number", "评分 Score", "留言 Comment"],
          summary.comments.map(commentRow),
          "没有留言 No comments",
        ),
      );
    } catch (err) {
      const what = "满意度评价 Ratings";
      const shown =
        err.status === 403
          ? notice("muted", `${what}: 仅限站点主管和管理员 supervisors and administrators only (${err.message})`, {
              "data-forbidden": "true",
            })
          : failure(err, what);
      weekly.replaceChildren(shown);
      comments.replaceChildren();
    }
  };
  const form = h(
    "form",
    { class: "filters", onsubmit: (e) => { e.preventDefault(); load(); } },
    weeks,
    site,
    h("button", { type: "submit", class: "primary", id: "ratings-submit" }, "查询 Show"),
  );
  weeks.addEventListener("change", load);
  main.replaceChildren(
    h("div", { class: "page-head" }, h("h1", {}, bi("满意度评价", "Satisfaction ratings"))),
    panel(
      bi("每周评价", "Ratings per site and week"),
      h("p", { class: "sub" }, "1–5 星；好 = 4–5 星，中 = 3 星，差 = 1–2 星。周从周一（北京时间）开始。1–5 stars; good = 4–5, fair = 3, poor = 1–2. Weeks start on Monday, China time."),
      form,
      weekly,
    ),
    panel(bi("最新留言", "Latest comments"), comments),
  );
  await load();
}
