// Talking to the control server, plus the few DOM helpers every part of the panel uses.
// Every change a tester makes goes through api(); a 4xx answer's "error" text is shown as is.

export class ApiFailure extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

export async function api(method, path, body) {
  const init = { method, headers: {} };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (err) {
    throw new ApiFailure(0, `无法连接模拟器 Cannot reach the simulator (${err.message})`);
  }
  let data = null;
  try {
    data = await response.json();
  } catch (err) {
    data = null; // a non-JSON answer: report the HTTP status alone
  }
  if (!response.ok) {
    const text = data && typeof data.error === "string" ? data.error : response.statusText;
    throw new ApiFailure(response.status, text);
  }
  return data;
}

export function query(params) {
  const parts = Object.entries(params)
    .filter(([, v]) => v !== null && v !== undefined && v !== "")
    .map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(v)}`);
  return parts.length ? `?${parts.join("&")}` : "";
}

// -- messages --------------------------------------------------------------------------------

let messageTimer = null;

export function showMessage(text, kind) {
  const box = document.getElementById("message");
  document.getElementById("message-text").textContent = text;
  box.dataset.kind = kind;
  box.hidden = false;
  clearTimeout(messageTimer);
  if (kind === "ok") {
    messageTimer = setTimeout(() => (box.hidden = true), 4000);
  }
}

export const CHANGED = "panel:changed"; // fired after every action, so the page refreshes

// Runs one tester action: a success note or the API's refusal, then a refresh either way.
export async function act(what, call, { door = null, done = () => "✓" } = {}) {
  try {
    const answer = await call();
    showMessage(`${what} ${done(answer)}`, "ok");
  } catch (err) {
    if (!(err instanceof ApiFailure)) throw err;
    const status = err.status ? ` (HTTP ${err.status})` : "";
    showMessage(`${what} 失败 failed${status}: ${err.message}`, "error");
    if (door) {
      door.classList.remove("refused");
      void door.offsetWidth; // restart the shake animation
      door.classList.add("refused");
    }
  }
  document.dispatchEvent(new Event(CHANGED));
}

// -- DOM -------------------------------------------------------------------------------------

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("data-")) node.dataset[camel(k.slice(5))] = v;
    else node.setAttribute(k, v);
  }
  for (const child of children) node.append(child);
  return node;
}

function camel(name) {
  return name.replace(/-([a-z])/g, (_, c) => c.toUpperCase());
}

// The shape of the cabinet: grids and choices are rebuilt only when this changes.
export function layoutKey(boards) {
  return boards.map((b) => `${b.bus}/${b.address}/${b.channels.length}`).join(",");
}

// Rebuilds a container only when what it shows changed: a node replaced between mouse-down
// and mouse-up would swallow the tester's click.
export function renderKeyed(container, key, build) {
  if (container.dataset.shown === key) return;
  container.dataset.shown = key;
  container.replaceChildren(...build());
}
