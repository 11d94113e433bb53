// The fault injector: pick a board (any bus), a channel or the whole board, a fault kind and
// its parameters; the list of active faults, each with its own clear button.

import { act, api, el, layoutKey, query, renderKeyed } from "./api.js";

const FAULT_LABELS = {
  absent: "离线",
  garbage: "噪声",
  bad_checksum: "校验错",
  slow: "慢应答",
  jammed: "卡死",
  forced_open: "被撬开",
  left_open: "关不上",
  duplicate_address: "地址重复",
};

let boards = []; // last GET /boards answer
let drawnLayout = "";
let kinds = null; // GET /fault-kinds, by name

export function faultName(kind) {
  return FAULT_LABELS[kind] ? `${FAULT_LABELS[kind]} ${kind}` : kind;
}

export function faultBadge(fault) {
  const badge = el("span", { class: "badge", text: faultName(fault.fault) });
  badge.dataset.fault = fault.fault;
  const params = Object.entries(fault.params).map(([k, v]) => `${k}=${v}`).join(" ");
  badge.title = `故障 Fault: ${faultName(fault.fault)}${params ? ` (${params})` : ""}`;
  return badge;
}

export async function loadFaultKinds() {
  if (kinds) return;
  const answer = await api("GET", "/fault-kinds");
  kinds = new Map(answer.kinds.map((k) => [k.fault, k]));
  document.getElementById("fault-kind").replaceChildren(
    ...answer.kinds.map((k) => el("option", { value: k.fault, text: faultName(k.fault) })));
  kindChanged();
}

export function renderFaults(latest) {
  boards = latest;
  const key = layoutKey(boards);
  if (key !== drawnLayout) {
    buildTargets();
    drawnLayout = key;
  }
  const shown = JSON.stringify(boards.map((b) => [b.bus, b.address, b.faults]));
  renderKeyed(document.getElementById("fault-list"), shown, faultRows);
}

function buildTargets() {
  const select = document.getElementById("fault-board");
  const previous = select.value;
  const manyBuses = new Set(boards.map((b) => b.bus)).size > 1;
  select.replaceChildren(...boards.map((b) => {
    const label = manyBuses ? `${b.bus} · 板 ${b.address}` : `板 Board ${b.address}`;
    return el("option", { value: JSON.stringify([b.bus, b.address]), text: label });
  }));
  if ([...select.options].some((o) => o.value === previous)) select.value = previous;
  buildChannelChoices();
}

function selectedBoard() {
  const value = document.getElementById("fault-board").value;
  if (!value) return null;
  const [bus, address] = JSON.parse(value);
  return boards.find((b) => b.bus === bus && b.address === address) || null;
}

function buildChannelChoices() {
  const select = document.getElementById("fault-channel");
  const previous = select.value;
  const board = selectedBoard();
  const options = [el("option", { value: "", text: "整板 Whole board" })];
  for (const ch of board ? board.channels : []) {
    options.push(el("option", { value: String(ch.channel), text: `门 ${ch.channel}` }));
  }
  select.replaceChildren(...options);
  if ([...select.options].some((o) => o.value === previous)) select.value = previous;
  kindChanged();
}

function selectedKind() {
  return kinds ? kinds.get(document.getElementById("fault-kind").value) : undefined;
}

function kindChanged() {
  const kind = selectedKind();
  if (!kind) return;
  const channel = document.getElementById("fault-channel");
  channel.disabled = !kind.per_channel;
  if (!kind.per_channel) channel.value = "";
  const scope = kind.per_channel ? "可选一个门 one door or the whole board" : "整板 whole board";
  document.getElementById("fault-help").textContent = `${kind.help} (${scope})`;
  document.getElementById("fault-params").replaceChildren(
    ...Object.entries(kind.params).map(([name, fallback]) => el("label", {}, `参数 ${name}`,
      el("input", { name, "data-param": name, value: String(fallback),
        inputmode: typeof fallback === "number" ? "decimal" : "text" }))));
}

function paramValues(kind) {
  const out = {};
  for (const input of document.querySelectorAll("#fault-params input")) {
    const fallback = kind.params[input.dataset.param];
    const raw = input.value.trim();
    // Numbers go as numbers; anything else goes as typed, and the API says what is wrong.
    const numeric = typeof fallback === "number" && raw !== "" && !Number.isNaN(Number(raw));
    out[input.dataset.param] = numeric ? Number(raw) : raw;
  }
  return out;
}

function inject(event) {
  event.preventDefault();
  const board = selectedBoard();
  const kind = selectedKind();
  if (!board || !kind) return;
  const channel = document.getElementById("fault-channel").value;
  const body = { bus: board.bus, board: board.address, fault: kind.fault };
  if (channel) body.channel = Number(channel);
  const params = paramValues(kind);
  if (Object.keys(params).length) body.params = params;
  const what = `注入故障 Inject ${faultName(kind.fault)} 板 board ${board.address}` +
    (channel ? ` 门 channel ${channel}` : "");
  act(what, () => api("POST", "/faults", body));
}

function clearFaults(params, what) {
  act(what, () => api("DELETE", `/faults${query(params)}`),
    { done: (answer) => `: ${answer.cleared} 个已清除 cleared` });
}

function faultRows() {
  const rows = [];
  for (const board of boards) {
    for (const fault of board.faults) {
      const scope = fault.channel === null ? "整板 whole board" : `门 channel ${fault.channel}`;
      const params = Object.entries(fault.params).map(([k, v]) => `${k}=${v}`).join(" ");
      const text = `${board.bus} · 板 board ${board.address} · ${scope}` +
        (params ? ` · ${params}` : "");
      const clear = el("button", { type: "button", text: "清除 Clear",
        title: "清除本板这一类故障 Clear this kind on this board" });
      clear.addEventListener("click", () => clearFaults(
        { bus: board.bus, board: board.address, fault: fault.fault },
        `清除故障 Clear ${fault.fault} 板 board ${board.address}`));
      rows.push(el("li", { "data-fault": fault.fault, "data-bus": board.bus,
        "data-board": board.address }, faultBadge(fault), el("span", { class: "what", text }),
        clear));
    }
  }
  if (!rows.length) rows.push(el("li", { class: "none", text: "无 None" }));
  return rows;
}

export function initFaults() {
  document.getElementById("fault-form").addEventListener("submit", inject);
  document.getElementById("fault-board").addEventListener("change", buildChannelChoices);
  document.getElementById("fault-kind").addEventListener("change", kindChanged);
  document.getElementById("fault-clear-board").addEventListener("click", () => {
    const board = selectedBoard();
    if (board) {
      clearFaults({ bus: board.bus, board: board.address },
        `清除本板故障 Clear faults of board ${board.address}`);
    }
  });
  document.getElementById("fault-clear-all").addEventListener("click", () =>
    clearFaults({}, "清除全部故障 Clear all faults"));
}
