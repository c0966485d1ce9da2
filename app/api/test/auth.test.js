import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import { verifyJwt } from "../src/auth.js";
import { createApp } from "../src/app.js";

const SECRET = "test-secret-of-reasonable-length";
const b64 = (obj) => Buffer.from(JSON.stringify(obj)).toString("base64url");
function sign(claims, { secret = SECRET, alg = "HS256" } = {}) {
  const head = `${b64({ alg, typ: "JWT" })}.${b64(claims)}`;
  return `${head}.${createHmac("sha256", secret).update(head).digest("base64url")}`;
}

test("a valid token passes and yields its claims", () => {
  const r = verifyJwt(sign({ sub: "ops", exp: 2000 }), SECRET, 1000);
  assert.deepEqual(r, { ok: true, claims: { sub: "ops", exp: 2000 } });
});

test("bad tokens are refused with a reason", () => {
  assert.equal(verifyJwt(sign({ exp: 2000 }, { secret: "other" }), SECRET, 1000).error, "bad signature");
  assert.equal(verifyJwt(sign({ exp: 1000 }), SECRET, 1000).error, "token expired");
  assert.equal(verifyJwt(sign({ sub: "x" }), SECRET, 1000).error, "token has no exp");
  assert.equal(verifyJwt(sign({ exp: 2000, nbf: 1500 }), SECRET, 1000).error, "token not valid yet");
  assert.equal(verifyJwt("a.b", SECRET).error, "malformed token");
  assert.equal(verifyJwt(undefined, SECRET).error, "missing token");
  const none = `${b64({ alg: "none" })}.${b64({ exp: 2000 })}.`;
  assert.equal(verifyJwt(none, SECRET, 1000).error, 'unsupported algorithm "none"');
});

let server;
let base;
before(async () => {
  const rows = [];
  const store = { list: async () => rows, create: async (m) => (rows.push({ id: rows.length + 1, ...m }), rows.at(-1)) };
  const app = createApp({ store, healthChecks: {}, auth: { required: true, secret: SECRET } });
  await new Promise((r) => {
    server = app.listen(0, "127.0.0.1", r);
  });
  base = `http://127.0.0.1:${server.address().port}`;
});
after(() => new Promise((r) => server.close(r)));

test("with auth required, writes need a bearer token and reads do not", async () => {
  const body = JSON.stringify({ name: "a", url: "https://example.com" });
  const headers = { "content-type": "application/json" };
  let res = await fetch(`${base}/monitors`, { method: "POST", headers, body });
  assert.equal(res.status, 401);
  assert.deepEqual(await res.json(), { errors: ["unauthorized: missing token"] });
  const token = sign({ sub: "ops", exp: Math.floor(Date.now() / 1000) + 60 });
  res = await fetch(`${base}/monitors`, { method: "POST", headers: { ...headers, authorization: `Bearer ${token}` }, body });
  assert.equal(res.status, 201);
  res = await fetch(`${base}/monitors`);
  assert.equal(res.status, 200);
  assert.equal((await res.json()).length, 1);
});
