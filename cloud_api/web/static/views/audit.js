// The audit trail (电子监察): verify the hash chain, and the latest entries.
// Both endpoints are for administrators; staff see "administrators only".

import { get, query } from "../api.js";
import { bi, failure, h, notice, panel, table, when } from "../dom.js";

const SHOWN = 50;

function entryRow(e) {
  return h(
    "tr",
    { "data-seq": e.seq },
    h("td", {}, String(e.seq)),
    h("td", { class: "nowrap" }, when(e.at)),
    h("td", {}, e.actor),
    h("td", { class: "mono" }, e.action),
    h("td", {}, e.subject),
    h("td", { class: "mono sub" }, JSON.stringify(e.detail).slice(0, 160)),
  );
}

function verdict(v) {
  if (v.ok) {
    return notice("good", `链完整 Chain intact: ${v.checked} 条已核验 entries checked`, {
      id: "audit-verdict",
      "data-ok": "true",
    });
  }
  return notice(
    "error",
    `链已损坏 Chain broken at entry ${v.broken_seq}: ${v.reason || ""} (${v.checked} checked)`,
    { id: "audit-verdict", "data-ok": "false" },
  );
}

export async function render(main) {
  const result = h("div", { id: "audit-result" });
  const entries = h("div", { id: "audit-entries" });
  const button = h("button", { type: "button", class: "primary", id: "audit-verify" }, "核验 Verify the chain");

  const loadEntries = async () => {
    try {
      const rows = await get(`/api/v1/dashboard/audit/latest${query({ limit: SHOWN })}`);
      entries.replaceChildren(
        table(
          ["序号 Seq", "时间 Time", "操作者 Actor", "动作 Action", "对象 Subject", "详情 Detail"],
          rows.map(entryRow),
          "暂无记录 No entries",
        ),
      );
    } catch (err) {
      entries.replaceChildren(failure(err, "电子监察 Audit"));
    }
  };
  button.addEventListener("click", async () => {
    button.disabled = true;
    result.replaceChildren(notice("muted", "核验中 Verifying…"));
    try {
      const v = await get("/api/v1/audit/verify");
      button.disabled = false;
      result.replaceChildren(verdict(v));
      await loadEntries();
    } catch (err) {
      button.disabled = false;
      result.replaceChildren(failure(err, "核验 Verify"));
    }
  });

  main.replaceChildren(
    h("div", { class: "page-head" }, h("h1", {}, bi("电子监察", "Audit trail"))),
    panel(
      bi("哈希链核验", "Hash-chain check"),
      h("p", { class: "sub" }, "每条记录都含有上一条的哈希；核验会找出第一处被篡改的记录。Each entry carries the hash of the one before; verifying finds the first tampered entry."),
      button,
      result,
    ),
    panel(bi("最近记录", "Latest entries"), entries),
  );
  await loadEntries();
}
