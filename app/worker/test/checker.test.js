import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import { checkMonitor } from "../src/checker.js";

let server;
let base;
before(async () => {
  server = http.createServer((req, res) => {
    if (req.url === "/slow") return setTimeout(() => res.end("late"), 2000);
    if (req.url === "/missing") {
      res.statusCode = 404;
      return res.end("nope");
    }
    res.end("hello");
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  base = `http://127.0.0.1:${server.address().port}`;
});
after(() => {
  server.closeAllConnections();
  return new Promise((r) => server.close(r));
});

test("expected status is ok", async () => {
  const r = await checkMonitor({ id: 7, url: `${base}/`, expectedStatus: 200, timeoutMs: 1000 });
  assert.equal(r.ok, true);
  assert.equal(r.statusCode, 200);
  assert.equal(r.monitorId, 7);
  assert.equal(r.error, null);
});

test("another status fails with a reason", async () => {
  const r = await checkMonitor({ id: 7, url: `${base}/missing`, expectedStatus: 200, timeoutMs: 1000 });
  assert.equal(r.ok, false);
  assert.equal(r.statusCode, 404);
  assert.equal(r.error, "expected status 200, got 404");
});

test("a slow site times out", async () => {
  const r = await checkMonitor({ id: 7, url: `${base}/slow`, timeoutMs: 100 });
  assert.equal(r.ok, false);
  assert.equal(r.statusCode, null);
  assert.equal(r.error, "no answer within 100 ms");
});

test("a refused connection is reported by its code", async () => {
  const fetchImpl = async () => {
    const err = new TypeError("fetch failed");
    err.cause = { code: "ECONNREFUSED" };
    throw err;
  };
  const r = await checkMonitor({ id: 1, url: "http://127.0.0.1:9/" }, { fetchImpl });
  assert.equal(r.error, "ECONNREFUSED");
});
