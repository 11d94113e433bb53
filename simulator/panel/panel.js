// Xinbao simulator panel: draws the cabinet and drives it through the control server's JSON
// API (GET /boards, POST .../door|item, GET|POST|DELETE /faults, GET /truth, GET /fault-kinds).
// Plain browser ES modules: no build step, nothing fetched from anywhere but this server.

import { ApiFailure, CHANGED, api } from "./api.js";
import { renderCabinet } from "./cabinet.js";
import { initFaults, loadFaultKinds, renderFaults } from "./faults.js";
import { initTruth, refreshTruth } from "./truth.js";

const POLL_MS = 1000;

function setLink(online, detail) {
  const status = document.getElementById("link-status");
  status.dataset.state = online ? "online" : "offline";
  status.textContent = online ? "在线 Online" : `离线 Offline — ${detail}`;
}

async function refresh() {
  try {
    await loadFaultKinds();
    const { boards } = await api("GET", "/boards");
    renderCabinet(boards);
    renderFaults(boards);
    await refreshTruth();
    setLink(true);
  } catch (err) {
    if (!(err instanceof ApiFailure)) throw err;
    setLink(false, err.message);
  }
}

async function poll() {
  try {
    await refresh();
  } finally {
    setTimeout(poll, POLL_MS);
  }
}

function start() {
  document.getElementById("message-close").addEventListener("click", () => {
    document.getElementById("message").hidden = true;
  });
  document.addEventListener(CHANGED, refresh);
  initFaults();
  initTruth(refresh);
  poll();
}

start(); // modules run after the document is parsed
