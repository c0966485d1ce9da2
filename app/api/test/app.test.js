import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createApp } from "../src/app.js";

// An in-memory store with the same interface as src/store.js.
function memoryStore() {
  const rows = new Map();
  let next = 1;
  return {
    async list() {
      return [...rows.values()];
    },
    async get(id) {
      return rows.get(id) ?? null;
    },
    async create(m) {
      const row = { id: next++, ...m };
      rows.set(row.id, row);
      return row;
    },
    async update(id, m) {
      if (!rows.has(id)) return null;
      const row = { id, ...m };
      rows.set(id, row);
      return row;
    },
    async remove(id) {
      return rows.delete(id);
    },
    async results(id, limit) {
      return [{ ok: true, statusCode: 200, latencyMs: 12, limit }];
    },
  };
}

let server;
let base;
let redisUp = true;

before(async () => {
  const app = createApp({
    store: memoryStore(),
    corsOrigin: "https://pulsewatch.localhost",
    healthChecks: {
      postgres: async () => {},
      redis: async () => {
        if (!redisUp) throw new Error("redis is down");
      },
    },
  });
  await new Promise((resolve) => {
    server = app.listen(0, "127.0.0.1", resolve);
  });
  base = `http://127.0.0.1:${server.address().port}`;
});

after(() => new Promise((resolve) => server.close(resolve)));

async function call(method, path, body) {
  const res = await fetch(base + path, {
    method,
    headers: body === undefined ? {} : { "content-type": "application/json" },
    body: body === undefined ? undefined : typeof body === "string" ? body : JSON.stringify(body),
  });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : null, headers: res.headers };
}

test("monitor CRUD round trip", async () => {
  const created = await call("POST", "/monitors", { name: "site", url: "https://example.com/" });
  assert.equal(created.status, 201);
  const id = created.body.id;
  assert.equal((await call("GET", `/monitors/${id}`)).body.name, "site");
  assert.equal((await call("GET", "/monitors")).body.length, 1);

  const updated = await call("PUT", `/monitors/${id}`, { name: "renamed", url: "https://example.com/", enabled: false });
  assert.equal(updated.status, 200);
  assert.equal(updated.body.enabled, false);

  assert.equal((await call("GET", `/monitors/${id}/results?limit=5`)).body[0].limit, 5);
  assert.equal((await call("DELETE", `/monitors/${id}`)).status, 204);
  assert.equal((await call("GET", `/monitors/${id}`)).status, 404);
  assert.equal((await call("DELETE", `/monitors/${id}`)).status, 404);
});

test("invalid monitors get 400 with every error", async () => {
  const res = await call("POST", "/monitors", { url: "gopher://x" });
  assert.equal(res.status, 400);
  assert.deepEqual(res.body.errors, ["name is required", "url must use http or https"]);
});

test("malformed JSON is a 400, not a 500", async () => {
  const res = await call("POST", "/monitors", "{not json");
  assert.equal(res.status, 400);
  assert.deepEqual(res.body.errors, ["body is not valid JSON"]);
});

test("health reflects the dependencies; liveness does not", async () => {
  assert.equal((await call("GET", "/health")).status, 200);
  redisUp = false;
  try {
    const res = await call("GET", "/health");
    assert.equal(res.status, 503);
    assert.equal(res.body.checks.redis.error, "redis is down");
    assert.equal((await call("GET", "/health/live")).status, 200);
  } finally {
    redisUp = true;
  }
});

test("CORS allows the web origin only", async () => {
  const res = await call("GET", "/monitors");
  assert.equal(res.headers.get("access-control-allow-origin"), "https://pulsewatch.localhost");
});
