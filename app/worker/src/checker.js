// One HTTP check of one monitor. fetch and the clock are injected.

export async function checkMonitor(monitor, { fetchImpl = fetch, now = () => performance.now(), defaultTimeoutMs = 5000 } = {}) {
  const timeoutMs = monitor.timeoutMs ?? defaultTimeoutMs;
  const started = now();
  try {
    const res = await fetchImpl(monitor.url, {
      method: "GET",
      redirect: "manual",
      signal: AbortSignal.timeout(timeoutMs),
      headers: { "user-agent": "PulseWatch/0.1 (+https://pulsewatch.localhost)" },
    });
    // Only the status matters; do not download the body.
    await res.body?.cancel?.();
    const expected = monitor.expectedStatus ?? 200;
    return {
      monitorId: monitor.id,
      ok: res.status === expected,
      statusCode: res.status,
      latencyMs: Math.round(now() - started),
      error: res.status === expected ? null : `expected status ${expected}, got ${res.status}`,
    };
  } catch (err) {
    const timedOut = err.name === "TimeoutError" || err.name === "AbortError";
    return {
      monitorId: monitor.id,
      ok: false,
      statusCode: null,
      latencyMs: Math.round(now() - started),
      error: timedOut ? `no answer within ${timeoutMs} ms` : (err.cause?.code ?? err.message),
    };
  }
}
