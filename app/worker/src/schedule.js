// Which monitors are due for a check. Pure: the clock is a parameter.

// monitors: [{ id, intervalSeconds, enabled, lastCheckedAt: Date|null }]
// Returns the due monitors, most overdue first (never-checked ones first of all).
export function dueMonitors(monitors, now) {
  const nowMs = now.getTime();
  return monitors
    .filter((m) => m.enabled)
    .map((m) => {
      const last = m.lastCheckedAt ? new Date(m.lastCheckedAt).getTime() : null;
      const dueAt = last === null ? -Infinity : last + m.intervalSeconds * 1000;
      return { m, dueAt };
    })
    .filter(({ dueAt }) => dueAt <= nowMs)
    .sort((a, b) => a.dueAt - b.dueAt || a.m.id - b.m.id)
    .map(({ m }) => m);
}

// Run fn over items with at most `limit` in flight; results keep the input order.
export async function mapLimit(items, limit, fn) {
  const results = new Array(items.length);
  let next = 0;
  async function lane() {
    while (next < items.length) {
      const i = next++;
      results[i] = await fn(items[i], i);
    }
  }
  await Promise.all(Array.from({ length: Math.min(Math.max(limit, 1), items.length) }, lane));
  return results;
}
