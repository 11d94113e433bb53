// The dashboard shell: log-in, navigation by URL hash, one view module per page.

import { ApiError, get, post, setToken, token, whenSessionEnds } from "./api.js";
import { startAlarmBadge, stopAlarmBadge } from "./alarm_badge.js";
import { h, notice } from "./dom.js";
import { startNotices, stopNotices } from "./notices.js";
import * as alarms from "./views/alarms.js";
import * as audit from "./views/audit.js";
import * as commands from "./views/commands.js";
import * as load from "./views/load.js";
import * as lockers from "./views/lockers.js";
import * as ratings from "./views/ratings.js";
import * as records from "./views/records.js";
import * as remoteOpen from "./views/remote_open.js";
import * as sms from "./views/sms.js";
import * as staff from "./views/staff.js";
import * as staffPass from "./views/staff_pass.js";
import * as tasks from "./views/tasks.js";
import * as webhooks from "./views/webhooks.js";

const VIEWS = {
  lockers,
  records,
  load,
  tasks,
  alarms,
  "remote-open": remoteOpen,
  "staff-pass": staffPass,
  staff,
  commands,
  sms,
  ratings,
  webhooks,
  audit,
};
const DEFAULT_VIEW = "lockers";

const $ = (id) => document.getElementById(id);
let me = null;
let cleanup = null;
let renderSeq = 0;

function showLogin(message) {
  stopNotices();
  stopAlarmBadge();
  if (cleanup) cleanup();
  cleanup = null;
  me = null;
  $("app-view").hidden = true;
  $("login-view").hidden = false;
  const error = $("login-error");
  error.hidden = !message;
  error.textContent = message || "";
  $("login-password").value = "";
  $("login-totp").value = "";
  $("login-username").focus();
}

async function onLogin(event) {
  event.preventDefault();
  const username = $("login-username").value.trim();
  const password = $("login-password").value;
  const totp = $("login-totp").value.trim();
  const error = $("login-error");
  if (!username || !password) {
    error.textContent = "请输入用户名和密码 Enter your user name and password";
    error.hidden = false;
    return;
  }
  if (totp && !/^\d{6,8}$/.test(totp)) {
    error.textContent = "动态码为 6 位数字 The one-time code is 6 digits";
    error.hidden = false;
    return;
  }
  const button = $("login-submit");
  button.disabled = true;
  try {
    const body = { username, password };
    if (totp) body.totp = totp;
    const answer = await post("/api/v1/staff/login", body);
    setToken(answer.access_token);
    error.hidden = true;
    await enter();
  } catch (err) {
    error.textContent =
      err instanceof ApiError && err.status === 401
        ? "用户名、密码或动态码错误 Wrong user name, password or one-time code"
        : `登录失败 Log-in failed: ${err.message}`;
    error.hidden = false;
  } finally {
    button.disabled = false;
  }
}

async function enter() {
  try {
    me = await get("/api/v1/staff/me");
  } catch (err) {
    showLogin(err.status === 401 ? "" : `登录失败 Log-in failed: ${err.message}`);
    return;
  }
  const roles = {
    admin: "管理员 admin",
    supervisor: "站点主管 supervisor",
    staff: "工作人员 staff",
    technician: "技术员 technician",
  };
  const site = me.site ? ` · ${me.site}` : "";
  $("whoami").textContent = `${me.username} · ${roles[me.role] || me.role}${site}`;
  $("login-view").hidden = true;
  $("app-view").hidden = false;
  startNotices();
  startAlarmBadge();
  if (!location.hash.startsWith("#/")) location.hash = `#/${DEFAULT_VIEW}`;
  else route();
}

async function route() {
  if (!me) return;
  const [key, ...rest] = location.hash.replace(/^#\//, "").split("/");
  const view = VIEWS[key] ? key : DEFAULT_VIEW;
  for (const link of document.querySelectorAll("#nav a")) {
    link.classList.toggle("active", link.dataset.view === view);
  }
  if (cleanup) cleanup();
  cleanup = null;
  const seq = ++renderSeq;
  const main = $("main");
  main.replaceChildren(h("p", { class: "loading" }, "加载中 Loading…"));
  main.dataset.view = view;
  // Each page renders into its own element, shown only if no newer page was asked for
  // meanwhile: a slow answer for the previous page never overwrites the current one.
  const container = h("div", { class: "view" });
  try {
    const stop = await VIEWS[view].render(container, { me, args: rest.map(decodeURIComponent) });
    if (seq === renderSeq && me) {
      cleanup = stop || null;
      main.replaceChildren(container);
    } else if (stop) {
      stop();
    }
  } catch (err) {
    if (seq === renderSeq && me) {
      main.replaceChildren(notice("error", `页面出错 This page failed: ${err.message}`));
    }
  }
}

async function logout() {
  // Ends the session on the server too (the token stops working everywhere at once).
  try {
    await post("/api/v1/staff/logout");
  } catch (err) {
    // Already over (expired, or ended elsewhere): nothing more to end.
  }
  setToken(null);
  history.replaceState(null, "", location.pathname);
  showLogin("");
}

whenSessionEnds(() => showLogin("登录已过期，请重新登录 Your session ended: log in again"));

window.addEventListener("hashchange", route);
document.addEventListener("DOMContentLoaded", () => {
  $("login-form").addEventListener("submit", onLogin);
  $("logout").addEventListener("click", logout);
  if (token()) enter();
  else showLogin("");
});
