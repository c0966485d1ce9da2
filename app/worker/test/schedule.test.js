import { test } from "node:test";
import assert from "node:assert/strict";
import { dueMonitors, mapLimit } from "../src/schedule.js";

const now = new Date("2026-01-01T00:10:00Z");
const ago = (s) => new Date(now.getTime() - s * 1000);

test("never-checked and overdue monitors are due, most overdue first", () => {
  const monitors = [
    { id: 1, intervalSeconds: 60, enabled: true, lastCheckedAt: ago(30) }, // not yet
    { id: 2, intervalSeconds: 60, enabled: true, lastCheckedAt: ago(61) }, // 1 s late
    { id: 3, intervalSeconds: 60, enabled: true, lastCheckedAt: ago(300) }, // 240 s late
    { id: 4, intervalSeconds: 60, enabled: true, lastCheckedAt: null }, // never
    { id: 5, intervalSeconds: 10, enabled: false, lastCheckedAt: null }, // disabled
    { id: 6, intervalSeconds: 60, enabled: true, lastCheckedAt: ago(60) }, // exactly due
  ];
  assert.deepEqual(dueMonitors(monitors, now).map((m) => m.id), [4, 3, 2, 6]);
});

test("timestamps as strings are accepted (pg returns Dates, JSON returns strings)", () => {
  const m = { id: 1, intervalSeconds: 60, enabled: true, lastCheckedAt: ago(120).toISOString() };
  assert.equal(dueMonitors([m], now).length, 1);
});

test("mapLimit keeps order and never exceeds the limit", async () => {
  let inFlight = 0;
  let peak = 0;
  const out = await mapLimit([5, 1, 4, 2, 3], 2, async (x) => {
    inFlight++;
    peak = Math.max(peak, inFlight);
    await new Promise((r) => setTimeout(r, x * 3));
    inFlight--;
    return x * 10;
  });
  assert.deepEqual(out, [50, 10, 40, 20, 30]);
  assert.equal(peak, 2);
  assert.deepEqual(await mapLimit([], 3, async () => 1), []);
});
