// Building the page without innerHTML: every value from the server goes in as text, so an
// applicant's name can never become markup.

export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") {
      el.addEventListener(key.slice(2), value);
    } else if (key === "class") {
      el.className = value;
    } else if (key === "style") {
      // Through the CSSOM: a style attribute would be refused by the CSP (no inline styles).
      el.style.cssText = String(value);
    } else if (key === "dataset") {
      Object.assign(el.dataset, value);
    } else if (value === true) {
      el.setAttribute(key, "");
    } else {
      el.setAttribute(key, String(value));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === undefined || child === null || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else if (child instanceof Node) el.appendChild(child);
    else el.appendChild(document.createTextNode(String(child)));
  }
}

// "中文 English" labels: the Chinese first, the English smaller beside it.
export function bi(zh, en) {
  return [zh, " ", h("span", { class: "en" }, en)];
}

export function when(iso) {
  if (!iso) return "—";
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return String(iso);
  const pad = (n) => String(n).padStart(2, "0");
  return (
    `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())} ` +
    `${pad(date.getHours())}:${pad(date.getMinutes())}`
  );
}

export function badge(text, tone, extra) {
  return h("span", { class: `badge ${tone || ""}`, ...(extra || {}) }, text);
}

export function table(headers, rows, empty) {
  if (!rows.length) return h("p", { class: "empty" }, empty || "暂无 Nothing here");
  return h(
    "table",
    { class: "grid" },
    h("thead", {}, h("tr", {}, headers.map((x) => h("th", {}, x)))),
    h("tbody", {}, rows),
  );
}

export function panel(title, ...body) {
  return h("section", { class: "card" }, h("h2", {}, title), ...body);
}

export function notice(kind, text, attrs) {
  return h("p", { class: `notice ${kind}`, role: kind === "error" ? "alert" : "status", ...(attrs || {}) }, text);
}

// What to show when a call failed: "unavailable" for a feature the API does not have yet.
export function failure(err, what) {
  if (err.unavailable) {
    return notice("muted", `${what}: 暂不可用 unavailable (this API does not offer it yet)`, {
      "data-unavailable": "true",
    });
  }
  if (err.status === 403) {
    return notice("muted", `${what}: 仅限管理员 administrators only`, { "data-forbidden": "true" });
  }
  return notice("error", `${what}: ${err.message}`);
}

export function showToast(text, tone) {
  const toast = document.getElementById("toast");
  toast.textContent = text;
  toast.className = `toast ${tone || ""}`;
  toast.hidden = false;
  clearTimeout(showToast.timer);
  showToast.timer = setTimeout(() => {
    toast.hidden = true;
  }, 4000);
}
