// A Redis lock so that only one worker replica runs a check cycle at a time.
// SET key token NX PX ttl takes it; a compare-and-delete script releases it only if we
// still hold it (the TTL may have expired and another replica taken it meanwhile).
import { randomUUID } from "node:crypto";

const RELEASE = `if redis.call("GET", KEYS[1]) == ARGV[1] then return redis.call("DEL", KEYS[1]) else return 0 end`;

export async function acquireLock(redis, key, ttlMs, token = randomUUID()) {
  const res = await redis.set(key, token, "PX", ttlMs, "NX");
  return res === "OK" ? token : null;
}

export async function releaseLock(redis, key, token) {
  return (await redis.eval(RELEASE, 1, key, token)) === 1;
}
