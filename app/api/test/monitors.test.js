import { test } from "node:test";
import assert from "node:assert/strict";
import { validateMonitor, parseId } from "../src/monitors.js";

test("a minimal monitor gets defaults", () => {
  const v = validateMonitor({ name: " Home ", url: "https://example.com" });
  assert.equal(v.ok, true);
  assert.deepEqual(v.value, {
    name: "Home",
    url: "https://example.com/",
    intervalSeconds: 60,
    timeoutMs: 5000,
    expectedStatus: 200,
    enabled: true,
  });
});

test("every problem is reported at once", () => {
  const v = validateMonitor({ url: "ftp://example.com", intervalSeconds: 5, expectedStatus: 42, extra: 1 });
  assert.equal(v.ok, false);
  assert.deepEqual(v.errors, [
    'unknown field "extra"',
    "name is required",
    "url must use http or https",
    "intervalSeconds must be an integer from 10 to 86400",
    "expectedStatus must be an HTTP status code (100-599)",
  ]);
});

test("urls with credentials or garbage are refused", () => {
  assert.deepEqual(validateMonitor({ name: "a", url: "https://u:p@example.com" }).errors, ["url must not contain credentials"]);
  assert.deepEqual(validateMonitor({ name: "a", url: "not a url" }).errors, ["url is not a valid URL"]);
});

test("the timeout must fit in the interval", () => {
  const v = validateMonitor({ name: "a", url: "http://example.com", intervalSeconds: 10, timeoutMs: 10000 });
  assert.deepEqual(v.errors, ["timeoutMs must be shorter than the interval"]);
});

test("non-objects are refused", () => {
  for (const body of [null, [], "x", 3]) assert.deepEqual(validateMonitor(body).errors, ["body must be a JSON object"]);
});

test("ids are positive integers written plainly", () => {
  assert.equal(parseId("12"), 12);
  for (const raw of ["0", "-1", "1.5", "01", "abc", "9007199254740993"]) assert.equal(parseId(raw), null, raw);
});
