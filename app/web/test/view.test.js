import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { apiBase, formatLatency, monitorPayload, monitorState, requestHeaders, uptime } from "../public/view.js";

test("uptime over the results", () => {
  assert.equal(uptime([]), null);
  assert.equal(uptime([{ ok: true }, { ok: false }, { ok: true }]), 66.7);
});

test("state comes from the newest result", () => {
  assert.deepEqual(monitorState({ enabled: false }, [{ ok: true }]), { label: "paused", tone: "muted" });
  assert.deepEqual(monitorState({ enabled: true }, []), { label: "pending", tone: "muted" });
  assert.deepEqual(monitorState({ enabled: true }, [{ ok: false, error: "timeout" }, { ok: true }]), {
    label: "down: timeout",
    tone: "bad",
  });
  assert.equal(monitorState({ enabled: true }, [{ ok: true }, { ok: false }]).label, "up");
});

test("latency formatting", () => {
  assert.equal(formatLatency(undefined), "-");
  assert.equal(formatLatency(87), "87 ms");
  assert.equal(formatLatency(1530), "1.53 s");
});

test("form to payload leaves empty optionals to the API defaults", () => {
  assert.deepEqual(monitorPayload({ name: " a ", url: "https://x/", intervalSeconds: "", timeoutMs: "2000" }), {
    name: "a",
    url: "https://x/",
    timeoutMs: 2000,
  });
});

test("api base from config.json", () => {
  assert.equal(apiBase({ apiBaseUrl: "https://api.pulsewatch.localhost/" }), "https://api.pulsewatch.localhost");
  assert.throws(() => apiBase({}), /no usable apiBaseUrl/);
  assert.throws(() => apiBase({ apiBaseUrl: "javascript:alert(1)" }), /no usable apiBaseUrl/);
});

test("nginx keeps every writable path under /tmp and listens on 8080", () => {
  const conf = readFileSync(new URL("../nginx.conf", import.meta.url), "utf8");
  assert.match(conf, /^pid \/tmp\/nginx\.pid;/m);
  assert.match(conf, /listen 8080;/);
  for (const kind of ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"]) {
    assert.match(conf, new RegExp(`${kind}_temp_path /tmp/`), kind);
  }
});

test("request headers carry the token only when there is one", () => {
  assert.deepEqual(requestHeaders(), {});
  assert.deepEqual(requestHeaders({ json: true, token: "  " }), { "content-type": "application/json" });
  assert.deepEqual(requestHeaders({ token: " abc " }), { authorization: "Bearer abc" });
});
