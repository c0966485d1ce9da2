// Just enough of ioredis for the lock: SET with PX/NX, and EVAL of the release script.
export function fakeRedis() {
  const data = new Map();
  return {
    data,
    async set(key, value, px, ttl, nx) {
      assert(px === "PX" && nx === "NX" && Number.isInteger(ttl));
      if (data.has(key)) return null;
      data.set(key, value);
      return "OK";
    },
    async eval(script, numKeys, key, token) {
      assert(numKeys === 1 && script.includes('redis.call("DEL"'));
      if (data.get(key) === token) {
        data.delete(key);
        return 1;
      }
      return 0;
    },
  };
}

function assert(cond) {
  if (!cond) throw new Error("fake redis called in an unexpected way");
}
