// Health aggregation: run every dependency check with a deadline, report each one.

export function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not answer within ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

// checks: { name: async () => void }. Resolves to { status, checks } where status is "ok"
// only when every check passed. Never rejects.
export async function aggregateHealth(checks, { timeoutMs = 2000, now = () => performance.now() } = {}) {
  const names = Object.keys(checks).sort();
  const results = await Promise.all(
    names.map(async (name) => {
      const started = now();
      try {
        await withTimeout(Promise.resolve().then(checks[name]), timeoutMs, name);
        return [name, { ok: true, latencyMs: Math.round(now() - started) }];
      } catch (err) {
        return [name, { ok: false, latencyMs: Math.round(now() - started), error: err.message }];
      }
    }),
  );
  const report = Object.fromEntries(results);
  const status = results.every(([, r]) => r.ok) ? "ok" : "unavailable";
  return { status, checks: report };
}
