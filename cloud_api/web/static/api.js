// Talking to the cloud API: bearer token from sessionStorage, problem+json errors.
// A 401 on any call made with a token means the session ended: forget it, back to log-in.

const TOKEN_KEY = "xinbao.staff.token";

export class ApiError extends Error {
  constructor(status, title, detail, problem) {
    super(detail || title || `HTTP ${status}`);
    this.status = status;
    this.title = title || `HTTP ${status}`;
    // The whole problem document: some carry reason, message_zh and message_en.
    this.problem = problem || null;
  }

  // The route itself is missing (an older API without that feature), not a missing object.
  get unavailable() {
    return this.status === 404 || this.status === 405 || this.status === 501;
  }
}

export function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function setToken(value) {
  if (value) sessionStorage.setItem(TOKEN_KEY, value);
  else sessionStorage.removeItem(TOKEN_KEY);
}

let onSessionEnded = () => {};

export function whenSessionEnds(callback) {
  onSessionEnded = callback;
}

async function readBody(response) {
  const text = await response.text();
  if (!text) return null;
  try {
    return JSON.parse(text);
  } catch {
    return { detail: text.slice(0, 200) };
  }
}

export async function api(method, path, body, raw) {
  const headers = { Accept: "application/json" };
  const bearer = token();
  if (bearer) headers.Authorization = `Bearer ${bearer}`;
  const init = { method, headers };
  if (raw !== undefined) {
    // A file sent as it is (its bytes, so the server judges the encoding).
    headers["Content-Type"] = raw.type;
    init.body = raw.body;
  } else if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch {
    throw new ApiError(0, "Network error", "无法连接服务器 Cannot reach the server");
  }
  const data = await readBody(response);
  if (response.status === 401 && bearer) {
    setToken(null);
    onSessionEnded();
  }
  if (!response.ok) {
    const error = new ApiError(response.status, data && data.title, data && data.detail);
    error.problem = data; // reason, message_zh, message_en where the API gives them
    throw error;
  }
  return data;
}

export const get = (path) => api("GET", path);
export const post = (path, body) => api("POST", path, body === undefined ? {} : body);
export const upload = (path, body, type) => api("POST", path, undefined, { body, type });

export function query(params) {
  const parts = Object.entries(params)
    .filter(([, v]) => v !== undefined && v !== null && v !== "")
    .map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(v)}`);
  return parts.length ? `?${parts.join("&")}` : "";
}
