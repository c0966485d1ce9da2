// Monitor validation: what a client may store. Pure functions, no I/O.

export const LIMITS = Object.freeze({
  nameMax: 100,
  urlMax: 2048,
  intervalMin: 10,
  intervalMax: 86400,
  timeoutMin: 100,
  timeoutMax: 30000,
});

const FIELDS = new Set(["name", "url", "intervalSeconds", "timeoutMs", "expectedStatus", "enabled"]);

function isInt(v) {
  return typeof v === "number" && Number.isInteger(v);
}

// Returns { ok: true, value } with defaults filled in, or { ok: false, errors: [...] }
// listing every problem at once.
export function validateMonitor(input) {
  const errors = [];
  if (input === null || typeof input !== "object" || Array.isArray(input)) {
    return { ok: false, errors: ["body must be a JSON object"] };
  }
  for (const key of Object.keys(input)) {
    if (!FIELDS.has(key)) errors.push(`unknown field "${key}"`);
  }

  const name = typeof input.name === "string" ? input.name.trim() : input.name;
  if (typeof name !== "string" || name.length === 0) errors.push("name is required");
  else if (name.length > LIMITS.nameMax) errors.push(`name is longer than ${LIMITS.nameMax} characters`);

  let url;
  if (typeof input.url !== "string" || input.url.length === 0) {
    errors.push("url is required");
  } else if (input.url.length > LIMITS.urlMax) {
    errors.push(`url is longer than ${LIMITS.urlMax} characters`);
  } else {
    try {
      url = new URL(input.url);
      if (url.protocol !== "http:" && url.protocol !== "https:") {
        errors.push("url must use http or https");
      } else if (url.username || url.password) {
        errors.push("url must not contain credentials");
      }
    } catch {
      errors.push("url is not a valid URL");
    }
  }

  const intervalSeconds = input.intervalSeconds ?? 60;
  const intervalOk =
    isInt(intervalSeconds) && intervalSeconds >= LIMITS.intervalMin && intervalSeconds <= LIMITS.intervalMax;
  if (!intervalOk) {
    errors.push(`intervalSeconds must be an integer from ${LIMITS.intervalMin} to ${LIMITS.intervalMax}`);
  }
  const timeoutMs = input.timeoutMs ?? 5000;
  if (!isInt(timeoutMs) || timeoutMs < LIMITS.timeoutMin || timeoutMs > LIMITS.timeoutMax) {
    errors.push(`timeoutMs must be an integer from ${LIMITS.timeoutMin} to ${LIMITS.timeoutMax}`);
  } else if (intervalOk && timeoutMs >= intervalSeconds * 1000) {
    errors.push("timeoutMs must be shorter than the interval");
  }
  const expectedStatus = input.expectedStatus ?? 200;
  if (!isInt(expectedStatus) || expectedStatus < 100 || expectedStatus > 599) {
    errors.push("expectedStatus must be an HTTP status code (100-599)");
  }
  const enabled = input.enabled ?? true;
  if (typeof enabled !== "boolean") errors.push("enabled must be true or false");

  if (errors.length > 0) return { ok: false, errors };
  return { ok: true, value: { name, url: url.toString(), intervalSeconds, timeoutMs, expectedStatus, enabled } };
}

export function parseId(raw) {
  const n = Number(raw);
  return Number.isSafeInteger(n) && n > 0 && String(n) === String(raw) ? n : null;
}
