// One check cycle: take the lock, check every due monitor, store the results, let go.
import { acquireLock, releaseLock } from "./lock.js";
import { dueMonitors, mapLimit } from "./schedule.js";
import { checkMonitor } from "./checker.js";
import { noMetrics } from "./metrics.js";
import { failSpan } from "@pulsewatch/shared/tracing";
import { trace, ROOT_CONTEXT, SpanKind, SpanStatusCode } from "@opentelemetry/api";

export const LOCK_KEY = "pulsewatch:worker:cycle";

const noopTracer = trace.getTracer("pulsewatch-worker");

// metrics: src/metrics.js (default: records nothing); tracer: an OpenTelemetry tracer
// (default: no-op). A cycle that runs is one span with a child span per check.
export async function runCycle({
  store,
  redis,
  now = () => new Date(),
  concurrency = 5,
  lockTtlMs = 60000,
  check = checkMonitor,
  log = () => {},
  metrics = noMetrics,
  tracer = noopTracer,
  clock = () => performance.now(),
}) {
  const token = await acquireLock(redis, LOCK_KEY, lockTtlMs);
  if (!token) {
    log("debug", "another worker holds the cycle lock; skipping");
    metrics.cycle("skipped");
    return { skipped: true, checked: 0, failed: 0 };
  }
  const span = tracer.startSpan("check cycle", { kind: SpanKind.INTERNAL });
  const parent = trace.setSpan(ROOT_CONTEXT, span);
  try {
    const due = dueMonitors(await store.enabledMonitors(), now());
    metrics.queued(due.length);
    span.setAttribute("pulsewatch.monitors.due", due.length);
    const results = await mapLimit(due, concurrency, async (m) => {
      const child = tracer.startSpan("check monitor", { kind: SpanKind.CLIENT, attributes: checkAttributes(m) }, parent);
      const started = clock();
      try {
        const r = await check(m);
        metrics.checked(r, (clock() - started) / 1000);
        if (r.statusCode !== null && r.statusCode !== undefined) child.setAttribute("http.response.status_code", r.statusCode);
        child.setAttribute("pulsewatch.check.ok", r.ok);
        if (!r.ok) child.setStatus({ code: SpanStatusCode.ERROR, message: r.error ?? "check failed" });
        return r;
      } finally {
        child.end();
      }
    });
    for (const r of results) await store.saveResult(r);
    const failed = results.filter((r) => !r.ok).length;
    span.setAttribute("pulsewatch.checks.failed", failed);
    if (results.length > 0) {
      const traceId = span.isRecording() ? span.spanContext().traceId : undefined;
      log("info", `checked ${results.length} monitors, ${failed} failing`, traceId ? { trace_id: traceId } : undefined);
    }
    metrics.cycle("completed");
    return { skipped: false, checked: results.length, failed };
  } catch (err) {
    metrics.cycle("failed");
    metrics.queued(0);
    failSpan(span, err);
    throw err;
  } finally {
    span.end();
    await releaseLock(redis, LOCK_KEY, token);
  }
}

// Span attributes of one check: the monitor and the server, never the full URL (its query
// string is the monitor owner's business).
function checkAttributes(m) {
  const attrs = { "pulsewatch.monitor.id": m.id, "http.request.method": "GET" };
  try {
    const u = new URL(m.url);
    attrs["server.address"] = u.hostname;
    attrs["url.scheme"] = u.protocol.replace(/:$/, "");
  } catch {
    // an unparsable URL is reported by the check itself
  }
  return attrs;
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
