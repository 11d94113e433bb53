// Lockers: online state, open alarms and occupancy per size; one locker's compartments,
// boards, events. Both pages follow the server (live.js) and redraw only on a change.

import { get, query } from "../api.js";
import { badge, bi, failure, h, notice, panel, table, when } from "../dom.js";
import { name } from "../labels.js";
import { watch } from "../live.js";

export function onlineBadge(locker) {
  // `online` comes from MQTT presence; an API without the MQTT side does not send it.
  if (typeof locker.online !== "boolean") {
    return badge("状态不可用 unavailable", "muted", { "data-online": "unknown" });
  }
  return locker.online
    ? badge("在线 online", "good", { "data-online": "true" })
    : badge("离线 off line", "bad", { "data-online": "false" });
}

const SIZE_ORDER = { S: 0, M: 1, L: 2 };

function occupancyBars(occupancy) {
  return [...(occupancy || [])]
    .sort((a, b) => (SIZE_ORDER[a.size] ?? 9) - (SIZE_ORDER[b.size] ?? 9))
    .map(occupancyBar);
}

function occupancyBar(o) {
  const used = o.total - o.free;
  const pct = o.total ? Math.round((used / o.total) * 100) : 0;
  return h(
    "div",
    { class: "occ", "data-size": o.size, title: `${used} / ${o.total} in use` },
    h("span", { class: "occ-size" }, o.size),
    h("span", { class: "occ-track" }, h("span", { class: "occ-fill", style: `width:${pct}%` })),
    h("span", { class: "occ-text" }, `空 ${o.free} / ${o.total} free`),
  );
}

// A locker with open alarms carries a marker (linked to its alarms) while they stay open.
function alarmMarker(count) {
  if (!count) return null;
  return h(
    "a",
    { href: "#/alarms", class: "alarm-marker", "data-alarm-count": count },
    badge(`告警 ${count} alarm${count > 1 ? "s" : ""}`, "bad"),
  );
}

function lockerRow(locker, openAlarms) {
  return h(
    "tr",
    { "data-locker-id": locker.id, "data-open-alarms": openAlarms || 0 },
    h("td", {}, h("a", { href: `#/lockers/${encodeURIComponent(locker.id)}` }, locker.id), alarmMarker(openAlarms)),
    h("td", {}, locker.site, h("div", { class: "sub" }, locker.address)),
    h("td", {}, onlineBadge(locker)),
    h("td", {}, locker.last_seen_at === undefined ? "—" : when(locker.last_seen_at)),
    h("td", { class: "occupancy" }, occupancyBars(locker.occupancy)),
    h(
      "td",
      {},
      locker.locked_out_until
        ? badge(`键盘锁定至 keypad locked until ${when(locker.locked_out_until)}`, "bad")
        : "",
    ),
  );
}

async function loadList() {
  // The alarm summary is an extra: without it (an older API) the list still shows.
  const [lockers, alarms] = await Promise.all([
    get("/api/v1/lockers?limit=500"),
    get("/api/v1/dashboard/alarm-summary").catch(() => null),
  ]);
  return { lockers, alarms: alarms ? alarms.lockers : {} };
}

function drawList(main, { lockers, alarms }) {
  const online = lockers.filter((l) => l.online === true).length;
  const known = lockers.some((l) => typeof l.online === "boolean");
  main.replaceChildren(
    h(
      "div",
      { class: "page-head" },
      h("h1", {}, bi("柜机", "Lockers")),
      h(
        "p",
        { class: "sub" },
        known
          ? `${lockers.length} 台 lockers · ${online} 在线 online`
          : `${lockers.length} 台 lockers · 在线状态暂不可用 online state unavailable`,
      ),
    ),
    panel(
      bi("全部柜机", "All lockers"),
      table(
        ["编号 Id", "地点 Site", "状态 State", "最后在线 Last seen", "空闲格口 Free compartments", ""],
        lockers.map((l) => lockerRow(l, alarms[l.id])),
        "尚无柜机 No lockers registered yet",
      ),
    ),
  );
}

function compartmentTile(c) {
  const state = c.out_of_service ? "out_of_service" : c.state;
  return h(
    "div",
    {
      class: `tile ${state}`,
      "data-compartment": c.number,
      "data-state": state,
      title: `board ${c.board} channel ${c.channel}`,
    },
    h("strong", {}, `#${c.number}`),
    h("span", { class: "tile-size" }, c.size),
    h("span", { class: "tile-state" }, c.out_of_service ? "停用 out of service" : name(c.state)),
  );
}

function boardsPanel(locker) {
  const title = bi("锁板", "Boards");
  if (!Array.isArray(locker.boards)) {
    return panel(title, notice("muted", "锁板状态暂不可用 board health unavailable", { "data-unavailable": "true" }));
  }
  const rows = locker.boards.map((b) =>
    h(
      "tr",
      { "data-board": `${b.bus}/${b.address}`, "data-reachable": String(b.reachable) },
      h("td", {}, b.bus),
      h("td", {}, String(b.address)),
      h("td", {}, b.reachable ? badge("正常 reachable", "good") : badge("无应答 unreachable", "bad")),
      h("td", {}, String(b.consecutive_timeouts ?? "—")),
    ),
  );
  return panel(
    title,
    table(
      ["总线 Bus", "地址 Address", "状态 State", "连续超时 Timeouts in a row"],
      rows,
      "尚无遥测 No telemetry from this locker yet",
    ),
  );
}

function eventsPanel(events) {
  if (events.error) return panel(bi("最近事件", "Recent events"), failure(events.error, "事件 Events"));
  const rows = events.map((e) =>
    h(
      "tr",
      {},
      h("td", { class: "nowrap" }, when(e.ts || e.received_at)),
      h("td", {}, e.type),
      h("td", {}, e.compartment ?? "—"),
      h("td", {}, e.outcome || ""),
      h("td", { class: "mono" }, e.data ? JSON.stringify(e.data).slice(0, 120) : ""),
    ),
  );
  return panel(bi("最近事件", "Recent events"), table(["时间 Time", "类型 Type", "格口 No.", "处理 Outcome", "数据 Data"], rows, "尚无事件 No events yet"));
}

async function loadDetail(lockerId) {
  const path = `/api/v1/lockers/${encodeURIComponent(lockerId)}`;
  const [locker, events] = await Promise.all([
    get(path),
    get(`${path}/events${query({ limit: 20 })}`).catch((error) => ({ error })),
  ]);
  return { locker, events };
}

function drawDetail(main, { locker, events }) {
  const counts = {};
  for (const c of locker.compartments) {
    const key = c.out_of_service ? "out_of_service" : c.state;
    counts[key] = (counts[key] || 0) + 1;
  }
  main.replaceChildren(
    h(
      "div",
      { class: "page-head" },
      h("a", { href: "#/lockers", class: "back" }, "← 全部柜机 All lockers"),
      h("h1", {}, locker.id, " ", onlineBadge(locker)),
      h("p", { class: "sub" }, `${locker.site} · ${locker.address}`),
    ),
    panel(
      bi("格口", "Compartments"),
      h(
        "p",
        { class: "legend" },
        ["free", "reserved", "occupied", "out_of_service"].map((s) =>
          h("span", { class: `key ${s}` }, `${s === "out_of_service" ? "停用 out of service" : name(s)}: ${counts[s] || 0}`),
        ),
      ),
      h("div", { class: "tiles", id: "compartments" }, locker.compartments.map(compartmentTile)),
      h("div", { class: "occupancy wide" }, occupancyBars(locker.occupancy)),
    ),
    boardsPanel(locker),
    eventsPanel(events),
  );
}

export async function render(main, { args }) {
  const live = args[0]
    ? watch(() => loadDetail(args[0]), (data, err) => (err ? main.replaceChildren(failure(err, "柜机 Lockers")) : drawDetail(main, data)))
    : watch(loadList, (data, err) => (err ? main.replaceChildren(failure(err, "柜机 Lockers")) : drawList(main, data)));
  await live.first;
  return live.stop;
}
