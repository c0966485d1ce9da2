// One check cycle: take the lock, check every due monitor, store the results, let go.
import { acquireLock, releaseLock } from "./lock.js";
import { dueMonitors, mapLimit } from "./schedule.js";
import { checkMonitor } from "./checker.js";

export const LOCK_KEY = "pulsewatch:worker:cycle";

export async function runCycle({ store, redis, now = () => new Date(), concurrency = 5, lockTtlMs = 60000, check = checkMonitor, log = () => {} }) {
  const token = await acquireLock(redis, LOCK_KEY, lockTtlMs);
  if (!token) {
    log("debug", "another worker holds the cycle lock; skipping");
    return { skipped: true, checked: 0, failed: 0 };
  }
  try {
    const due = dueMonitors(await store.enabledMonitors(), now());
    const results = await mapLimit(due, concurrency, (m) => check(m));
    for (const r of results) await store.saveResult(r);
    const failed = results.filter((r) => !r.ok).length;
    if (results.length > 0) log("info", `checked ${results.length} monitors, ${failed} failing`);
    return { skipped: false, checked: results.length, failed };
  } finally {
    await releaseLock(redis, LOCK_KEY, token);
  }
}

export function pgStore(pool) {
  return {
    async enabledMonitors() {
      const { rows } = await pool.query(
        `SELECT m.id, m.url, m.interval_seconds AS "intervalSeconds", m.timeout_ms AS "timeoutMs",
           m.expected_status AS "expectedStatus", m.enabled,
           (SELECT max(r.checked_at) FROM check_results r WHERE r.monitor_id = m.id) AS "lastCheckedAt"
         FROM monitors m WHERE m.enabled`,
      );
      return rows;
    },
    async saveResult(r) {
      await pool.query(
        `INSERT INTO check_results (monitor_id, ok, status_code, latency_ms, error) VALUES ($1, $2, $3, $4, $5)`,
        [r.monitorId, r.ok, r.statusCode, r.latencyMs, r.error],
      );
    },
  };
}
