// The API client: JSON in and out, the session (tokens in this tab's sessionStorage,
// refreshed once on a 401), and errors turned into sentences a person can read.

const SESSION_KEY = "orderflow.session";

export class ApiError extends Error {
  constructor(status, problem) {
    const fields = (problem.errors || [])
      .map((e) => (e.field ? `${e.field}: ${e.message}` : e.message))
      .join("; ");
    super([problem.detail || problem.title || `Request failed (${status})`, fields].filter(Boolean).join(" — "));
    this.status = status;
    this.problem = problem;
  }
}

export function session() {
  try {
    return JSON.parse(sessionStorage.getItem(SESSION_KEY));
  } catch {
    return null;
  }
}

function keep(tokens) {
  if (tokens) sessionStorage.setItem(SESSION_KEY, JSON.stringify(tokens));
  else sessionStorage.removeItem(SESSION_KEY);
}

export async function signIn(login, password) {
  const body = login.includes("@") ? { email: login, password } : { username: login, password };
  const tokens = await request("POST", "/api/auth/login", body, { anonymous: true });
  keep(tokens);
  return tokens.user;
}

export async function register(fields) {
  await request("POST", "/api/auth/register", fields, { anonymous: true });
  return signIn(fields.username, fields.password);
}

export async function signOut() {
  const current = session();
  if (current) {
    await request("POST", "/api/auth/logout", { refresh_token: current.refresh_token }).catch(() => {});
  }
  keep(null);
}

async function refresh() {
  const current = session();
  if (!current) return false;
  const response = await fetch("/api/auth/refresh", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ refresh_token: current.refresh_token }),
  });
  if (!response.ok) {
    keep(null);
    return false;
  }
  keep(await response.json());
  return true;
}

/// Sends a request; resolves to the parsed body (or null), rejects with an ApiError.
export async function request(method, path, body, { anonymous = false, idempotent = false } = {}) {
  const send = () => {
    const headers = {};
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const current = session();
    if (!anonymous && current) headers.Authorization = `Bearer ${current.access_token}`;
    if (idempotent) headers["Idempotency-Key"] = crypto.randomUUID();
    return fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  };
  let response;
  try {
    response = await send();
    if (response.status === 401 && !anonymous && (await refresh())) response = await send();
  } catch {
    throw new ApiError(0, { detail: "The server cannot be reached. Check your connection and try again." });
  }
  const text = await response.text();
  const parsed = text ? JSON.parse(text) : null;
  if (!response.ok) {
    if (response.status === 401 && !anonymous) keep(null);
    const problem = parsed || { detail: `Request failed (${response.status})` };
    if (response.status === 429 || response.status === 503) {
      const wait = response.headers.get("Retry-After");
      if (wait) problem.detail = `${problem.detail || "Busy."} Try again in ${wait} s.`;
    }
    throw new ApiError(response.status, problem);
  }
  return parsed;
}

export const get = (path) => request("GET", path);
export const post = (path, body, options) => request("POST", path, body ?? {}, options);
export const put = (path, body) => request("PUT", path, body);
export const patch = (path, body) => request("PATCH", path, body);
export const del = (path) => request("DELETE", path);
