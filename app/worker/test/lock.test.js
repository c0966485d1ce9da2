import { test } from "node:test";
import assert from "node:assert/strict";
import { acquireLock, releaseLock } from "../src/lock.js";
import { fakeRedis } from "./fake-redis.js";

test("one holder at a time; release only by the holder", async () => {
  const redis = fakeRedis();
  const a = await acquireLock(redis, "k", 1000);
  assert.ok(a);
  assert.equal(await acquireLock(redis, "k", 1000), null);
  assert.equal(await releaseLock(redis, "k", "someone-else"), false);
  assert.equal(redis.data.get("k"), a);
  assert.equal(await releaseLock(redis, "k", a), true);
  assert.ok(await acquireLock(redis, "k", 1000));
});
