// The cabinet front: one section per bus, one framed board per lock board, a door per channel.
// Clicking a door opens or closes it; the tray under it puts in or takes out an item.

import { act, api, el, layoutKey, query, renderKeyed } from "./api.js";
import { faultBadge } from "./faults.js";

const LOCK_SVG =
  '<svg viewBox="0 0 16 18" aria-hidden="true"><path d="M4 8V5.5a4 4 0 0 1 8 0V8" fill="none" ' +
  'stroke="currentColor" stroke-width="2"/><rect x="1.5" y="8" width="13" height="9.5" rx="2" ' +
  'fill="currentColor"/></svg>';
const UNLOCK_SVG =
  '<svg viewBox="0 0 16 18" aria-hidden="true"><path d="M4 8V5.5a4 4 0 0 1 7.6-1.7" fill="none" ' +
  'stroke="currentColor" stroke-width="2"/><rect x="1.5" y="8" width="13" height="9.5" rx="2" ' +
  'fill="currentColor"/></svg>';

let drawnLayout = ""; // which buses/boards/channels the drawn grid has

// Real cabinets stack doors in columns; a board this size usually has this many.
function columnsFor(channels) {
  if (channels <= 4) return channels;
  if (channels <= 16) return 4;
  if (channels <= 24) return 6;
  return 8;
}

function buildCabinet(boards) {
  const root = document.getElementById("cabinet");
  root.replaceChildren();
  if (!boards.length) {
    root.append(el("p", { class: "empty", text: "没有板 No boards" }));
    return;
  }
  const buses = new Map();
  for (const board of boards) {
    if (!buses.has(board.bus)) buses.set(board.bus, []);
    buses.get(board.bus).push(board);
  }
  for (const [bus, busBoards] of buses) {
    const title = el("h3", { class: "bus-title" }, "总线 Bus ", el("strong", { text: bus }),
      ` · ${busBoards[0].protocol} · ${busBoards.length} 块板 board(s)`);
    const row = el("div", { class: "boards" });
    for (const board of busBoards) row.append(buildBoard(board));
    root.append(el("section", { class: "bus", "data-bus": bus }, title, row));
  }
}

function buildBoard(board) {
  const head = el("div", { class: "board-head" },
    el("span", {}, `板 Board ${board.address} `,
      el("span", { class: "proto", text: `${board.channels.length} 门 doors` })),
    el("span", { class: "badges board-faults" }));
  const doors = el("div", { class: "doors" });
  doors.style.setProperty("--cols", columnsFor(board.channels.length));
  for (const ch of board.channels) doors.append(buildDoor(board, ch.channel));
  return el("article", { class: "board", "data-bus": board.bus, "data-board": board.address },
    head, doors);
}

function buildDoor(board, channel) {
  const face = el("button", { class: "door-face", type: "button" },
    el("span", { class: "door-no", text: String(channel).padStart(2, "0") }),
    el("span", { class: "door-label" }),
    el("span", { class: "badges door-faults" }),
    el("span", { class: "door-state" }),
    el("span", { class: "item-count" }),
    el("span", { class: "lock-icon" }),
    el("span", { class: "paper-stack" }));
  const tray = el("div", { class: "door-tray" },
    el("button", { class: "item-put", type: "button", title: "放入物品 Put an item in",
      text: "放入 Put" }),
    el("button", { class: "item-take", type: "button", title: "取出物品 Take an item out",
      text: "取出 Take" }));
  const door = el("div", { class: "door", "data-bus": board.bus, "data-board": board.address,
    "data-channel": channel }, face, tray);
  face.addEventListener("click", () => doorClicked(door));
  tray.querySelector(".item-put").addEventListener("click", () => itemAction(door, "put"));
  tray.querySelector(".item-take").addEventListener("click", () => itemAction(door, "take"));
  return door;
}

export function renderCabinet(boards) {
  const key = layoutKey(boards);
  if (key !== drawnLayout) {
    // Rebuilt only when the shape changes, never under the tester's pointer otherwise.
    buildCabinet(boards);
    drawnLayout = key;
  }
  for (const board of boards) {
    const boardEl = document.querySelector(
      `.board[data-bus="${CSS.escape(board.bus)}"][data-board="${board.address}"]`);
    const boardWide = board.faults.filter((f) => f.channel === null);
    renderKeyed(boardEl.querySelector(".board-faults"), JSON.stringify(boardWide),
      () => boardWide.map((f) => faultBadge(f)));
    boardEl.dataset.absent = String(boardWide.some((f) => f.fault === "absent"));
    for (const ch of board.channels) {
      const door = boardEl.querySelector(`.door[data-channel="${ch.channel}"]`);
      renderDoor(door, ch, board.faults.filter((f) => f.channel === ch.channel));
    }
  }
}

function renderDoor(door, ch, faults) {
  door.dataset.door = ch.door_open ? "open" : "closed";
  door.dataset.latched = String(ch.latched);
  door.dataset.locked = String(ch.locked);
  door.dataset.pulsing = String(ch.pulsing);
  door.dataset.items = String(ch.items);
  door.dataset.itemsInside = String(ch.items > 0);
  let text;
  if (ch.door_open) text = "开 Open";
  else if (ch.locked) text = "关·已锁 Locked";
  else text = "关·未锁 Unlatched";
  door.querySelector(".door-state").textContent = text;
  // The cabinet's own name for this door (its compartment number), when the bus was told it.
  const label = door.querySelector(".door-label");
  label.textContent = ch.label ? `箱 ${ch.label}` : "";
  label.hidden = !ch.label;
  const icon = door.querySelector(".lock-icon");
  if (icon.dataset.locked !== String(ch.locked)) {
    icon.dataset.locked = String(ch.locked);
    icon.innerHTML = ch.locked ? LOCK_SVG : UNLOCK_SVG; // a constant, never server text
  }
  const papers = Math.min(ch.items, 4);
  renderKeyed(door.querySelector(".paper-stack"), String(papers), () =>
    Array.from({ length: papers }, () => el("span", { class: "paper" })));
  door.querySelector(".item-count").textContent = ch.items ? `物品 Items ×${ch.items}` : "空 Empty";
  renderKeyed(door.querySelector(".door-faults"), JSON.stringify(faults),
    () => faults.map((f) => faultBadge(f)));
  const action = ch.door_open ? "关门 Close" : "开门 Open";
  door.querySelector(".door-face").title = `${action} — ${where(door)}`;
}

function where(door) {
  return `板 board ${door.dataset.board} 门 channel ${door.dataset.channel}`;
}

function channelPath(door, what) {
  return `/boards/${door.dataset.board}/channels/${door.dataset.channel}/${what}` +
    query({ bus: door.dataset.bus });
}

function doorClicked(door) {
  const opening = door.dataset.door !== "open";
  const body = { action: opening ? "open" : "close" };
  if (opening && document.getElementById("force-open").checked) body.by = "forced";
  const what = `${opening ? "开门 Open" : "关门 Close"} ${where(door)}`;
  return act(what, () => api("POST", channelPath(door, "door"), body), { door });
}

function itemAction(door, action) {
  const what = `${action === "put" ? "放入物品 Put item" : "取出物品 Take item"} ${where(door)}`;
  return act(what, () => api("POST", channelPath(door, "item"), { action }), { door });
}
