import { test } from "node:test";
import assert from "node:assert/strict";
import { aggregateHealth } from "../src/health.js";

test("ok only when every check passes", async () => {
  const report = await aggregateHealth({ postgres: async () => {}, redis: () => {} });
  assert.equal(report.status, "ok");
  assert.deepEqual(Object.keys(report.checks), ["postgres", "redis"]);
  assert.equal(report.checks.redis.ok, true);
});

test("a failing check names its error and fails the whole", async () => {
  const report = await aggregateHealth({
    postgres: async () => {},
    redis: async () => {
      throw new Error("connect ECONNREFUSED");
    },
  });
  assert.equal(report.status, "unavailable");
  assert.equal(report.checks.postgres.ok, true);
  assert.deepEqual(report.checks.redis.ok, false);
  assert.equal(report.checks.redis.error, "connect ECONNREFUSED");
});

test("a check that hangs times out instead of hanging the probe", async () => {
  const started = Date.now();
  const report = await aggregateHealth({ postgres: () => new Promise(() => {}) }, { timeoutMs: 50 });
  assert.equal(report.status, "unavailable");
  assert.match(report.checks.postgres.error, /did not answer within 50 ms/);
  assert.ok(Date.now() - started < 1000);
});

test("a synchronous throw is caught", async () => {
  const report = await aggregateHealth({
    redis: () => {
      throw new Error("boom");
    },
  });
  assert.equal(report.checks.redis.error, "boom");
});
