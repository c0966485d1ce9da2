import { test } from "node:test";
import assert from "node:assert/strict";
import { loopState, startLoop } from "../src/loop.js";

test("liveness goes stale when no cycle finishes in time", () => {
  let t = 0;
  const s = loopState({ now: () => t, staleAfterMs: 100 });
  assert.equal(s.live(), true);
  t = 150;
  assert.equal(s.live(), false);
  s.finished(new Error("db down"));
  assert.equal(s.live(), true);
  assert.equal(s.snapshot().lastError, "db down");
});

test("the loop keeps going after a failing cycle", async () => {
  let runs = 0;
  const s = loopState({ staleAfterMs: 1000 });
  const stop = startLoop({
    intervalMs: 5,
    state: s,
    cycle: async () => {
      runs++;
      if (runs === 1) throw new Error("first fails");
    },
  });
  // Wait for the observable state (a good cycle after the failed one), not for a
  // fixed time: on a busy machine 60 ms did not always fit two cycles.
  const deadline = Date.now() + 10_000;
  while (!(runs >= 2 && s.snapshot().lastFinishedAt && s.snapshot().lastError === null)) {
    assert.ok(Date.now() < deadline, `ran ${runs} times, last error ${s.snapshot().lastError}`);
    await new Promise((r) => setTimeout(r, 5));
  }
  stop();
  assert.ok(runs >= 2, `ran ${runs} times`);
});
