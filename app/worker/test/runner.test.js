import { test } from "node:test";
import assert from "node:assert/strict";
import { runCycle, LOCK_KEY } from "../src/runner.js";
import { fakeRedis } from "./fake-redis.js";

function store(monitors) {
  const saved = [];
  return { saved, enabledMonitors: async () => monitors, saveResult: async (r) => saved.push(r) };
}

const now = () => new Date("2026-01-01T00:00:00Z");

test("checks the due monitors, stores results, releases the lock", async () => {
  const s = store([
    { id: 1, intervalSeconds: 60, enabled: true, lastCheckedAt: null },
    { id: 2, intervalSeconds: 60, enabled: true, lastCheckedAt: new Date("2025-12-31T23:59:30Z") },
    { id: 3, intervalSeconds: 60, enabled: true, lastCheckedAt: null },
  ]);
  const redis = fakeRedis();
  const check = async (m) => ({ monitorId: m.id, ok: m.id !== 3, statusCode: m.id === 3 ? 500 : 200, latencyMs: 1, error: null });
  const summary = await runCycle({ store: s, redis, now, check });
  assert.deepEqual(summary, { skipped: false, checked: 2, failed: 1 });
  assert.deepEqual(s.saved.map((r) => r.monitorId), [1, 3]);
  assert.equal(redis.data.has(LOCK_KEY), false);
});

test("skips when another replica holds the lock", async () => {
  const redis = fakeRedis();
  redis.data.set(LOCK_KEY, "other");
  const s = store([{ id: 1, intervalSeconds: 60, enabled: true, lastCheckedAt: null }]);
  const summary = await runCycle({ store: s, redis, now, check: async () => assert.fail("must not check") });
  assert.deepEqual(summary, { skipped: true, checked: 0, failed: 0 });
  assert.equal(redis.data.get(LOCK_KEY), "other");
});

test("the lock is released even when the store fails", async () => {
  const redis = fakeRedis();
  const s = { enabledMonitors: async () => { throw new Error("db down"); }, saveResult: async () => {} };
  await assert.rejects(runCycle({ store: s, redis, now }), /db down/);
  assert.equal(redis.data.has(LOCK_KEY), false);
});
