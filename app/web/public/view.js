// Pure view helpers of the PulseWatch UI, shared by the browser (app.js) and the tests.

// Uptime over the given results as a percentage with one decimal, or null with no data.
export function uptime(results) {
  if (!results || results.length === 0) return null;
  const up = results.filter((r) => r.ok).length;
  return Math.round((up / results.length) * 1000) / 10;
}

// The state shown for a monitor: from its most recent result (results are newest first).
export function monitorState(monitor, results) {
  if (!monitor.enabled) return { label: "paused", tone: "muted" };
  if (!results || results.length === 0) return { label: "pending", tone: "muted" };
  const last = results[0];
  if (last.ok) return { label: "up", tone: "good" };
  return { label: last.error ? `down: ${last.error}` : "down", tone: "bad" };
}

export function formatLatency(ms) {
  if (ms === null || ms === undefined) return "-";
  return ms < 1000 ? `${ms} ms` : `${(ms / 1000).toFixed(2)} s`;
}

// Form fields (strings) to the API's monitor payload. Empty optional fields are left out so
// the API applies its defaults.
export function monitorPayload(fields) {
  const payload = { name: (fields.name ?? "").trim(), url: (fields.url ?? "").trim() };
  for (const key of ["intervalSeconds", "timeoutMs", "expectedStatus"]) {
    const raw = (fields[key] ?? "").trim();
    if (raw !== "") payload[key] = Number(raw);
  }
  return payload;
}

// The API base URL from /config.json, without a trailing slash.
export function apiBase(config) {
  const url = config && typeof config.apiBaseUrl === "string" ? config.apiBaseUrl : "";
  if (!/^https?:\/\//.test(url)) throw new Error("config.json has no usable apiBaseUrl");
  return url.replace(/\/+$/, "");
}

// Request headers for the API: JSON body and, when the user gave one, the bearer token
// (staging/prod require it for writes).
export function requestHeaders({ json = false, token = "" } = {}) {
  const headers = {};
  if (json) headers["content-type"] = "application/json";
  const t = token.trim();
  if (t) headers.authorization = `Bearer ${t}`;
  return headers;
}
