import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createApp } from "../src/app.js";
import { createMetrics, metricsServer } from "../src/metrics.js";
import { createTracing, tracesUrl, parseResourceAttributes } from "@pulsewatch/shared/tracing";
import { routeOf } from "../src/observe.js";
import { otlpStandIn } from "../../shared/test/otlp-standin.js";

const store = {
  list: async () => [],
  get: async (id) => (id === 1 ? { id: 1, url: "https://example.com" } : null),
  create: async () => {
    throw new Error("boom");
  },
  results: async () => [],
};
const healthChecks = { postgres: async () => {}, redis: async () => {} };

async function listen(server) {
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  return `http://127.0.0.1:${server.address().port}`;
}
const close = (server) => new Promise((resolve) => server.close(resolve));

let collector;
let tracing;
let metrics;
let appServer;
let metricsSrv;
let base;
let metricsBase;
const logs = [];

before(async () => {
  collector = await otlpStandIn();
  tracing = createTracing({
    env: { OTEL_EXPORTER_OTLP_ENDPOINT: collector.endpoint + "/", OTEL_RESOURCE_ATTRIBUTES: "deployment.environment.name=test,k8s.namespace.name=pulsewatch-dev" },
    serviceName: "pulsewatch-api",
  });
  metrics = createMetrics();
  const app = createApp({ store, healthChecks, metrics, tracing, log: (...a) => logs.push(a) });
  appServer = app.listen(0);
  await new Promise((resolve) => appServer.once("listening", resolve));
  base = `http://127.0.0.1:${appServer.address().port}`;
  metricsSrv = metricsServer(metrics.registry);
  metricsBase = await listen(metricsSrv);
});

after(async () => {
  await close(appServer);
  await close(metricsSrv);
  await tracing.shutdown();
  await collector.close();
});

test("tracesUrl follows the OTLP environment variables", () => {
  assert.equal(tracesUrl({}), "");
  assert.equal(tracesUrl({ OTEL_EXPORTER_OTLP_ENDPOINT: "http://otel-collector.monitoring.svc:4318" }), "http://otel-collector.monitoring.svc:4318/v1/traces");
  assert.equal(tracesUrl({ OTEL_EXPORTER_OTLP_ENDPOINT: "http://c:4318/", OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: "https://x/otlp/v1/traces" }), "https://x/otlp/v1/traces");
  assert.deepEqual(parseResourceAttributes("a=1, b=x%2Cy,broken"), { a: "1", b: "x,y" });
});

test("without an endpoint nothing is traced and nothing is sent", async () => {
  const off = createTracing({ env: {}, serviceName: "pulsewatch-api" });
  assert.equal(off.enabled, false);
  const span = off.tracer.startSpan("x");
  assert.equal(span.isRecording(), false);
  span.end();
  await off.forceFlush();
});

test("/metrics counts requests by method, route template and status, with latency", async () => {
  const before = collector.requests.length;
  await fetch(`${base}/monitors`);
  await fetch(`${base}/monitors`);
  await fetch(`${base}/monitors/1`);
  await fetch(`${base}/monitors/99`);
  await fetch(`${base}/no/such/path/12345`);
  await fetch(`${base}/monitors`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ url: "https://example.com" }) });
  await fetch(`${base}/health`);

  const res = await fetch(`${metricsBase}/metrics`);
  assert.equal(res.status, 200);
  assert.match(res.headers.get("content-type"), /^text\/plain; version=0\.0\.4/);
  const text = await res.text();
  assert.match(text, /^# TYPE pulsewatch_http_requests_total counter$/m);
  assert.match(text, /^pulsewatch_http_requests_total\{method="GET",route="\/monitors",status="200"\} 2$/m);
  assert.match(text, /^pulsewatch_http_requests_total\{method="GET",route="\/monitors\/:id",status="200"\} 1$/m);
  assert.match(text, /^pulsewatch_http_requests_total\{method="GET",route="\/monitors\/:id",status="404"\} 1$/m);
  assert.match(text, /^pulsewatch_http_requests_total\{method="GET",route="unmatched",status="404"\} 1$/m);
  assert.match(text, /^pulsewatch_http_requests_total\{method="POST",route="\/monitors",status="400"\} 1$/m);
  assert.match(text, /^pulsewatch_http_requests_total\{method="GET",route="\/health",status="200"\} 1$/m);
  assert.doesNotMatch(text, /12345/, "raw paths never become label values");
  assert.match(text, /^# TYPE pulsewatch_http_request_duration_seconds histogram$/m);
  assert.match(text, /^pulsewatch_http_request_duration_seconds_bucket\{le="0\.005",method="GET",route="\/monitors",status="200"\} \d+$/m);
  assert.match(text, /^pulsewatch_http_request_duration_seconds_count\{method="GET",route="\/monitors",status="200"\} 2$/m);
  assert.match(text, /^process_cpu_user_seconds_total \d/m, "default process metrics");
  // the metrics listener serves nothing else
  assert.equal((await fetch(`${metricsBase}/`)).status, 404);
  assert.equal((await fetch(`${metricsBase}/metrics`, { method: "POST" })).status, 405);
  assert.ok(collector.requests.length >= before);
});

test("requests are exported as OTLP spans to the collector, continuing incoming traces", async () => {
  await tracing.forceFlush();
  const already = collector.spans.length;
  const parentTrace = "4bf92f3577b34da6a3ce929d0e0e4736";
  await fetch(`${base}/monitors`, { headers: { traceparent: `00-${parentTrace}-00f067aa0ba902b7-01` } });
  await fetch(`${base}/monitors/1`);
  await fetch(`${base}/monitors`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ name: "example", url: "https://example.com" }) });
  await fetch(`${base}/health`);
  await fetch(`${base}/health/live`);
  await tracing.forceFlush();

  const spans = collector.spans.slice(already);
  assert.equal(spans.length, 3, `expected 3 spans (probes are not traced), got ${spans.map((s) => s.name)}`);
  assert.deepEqual(spans.map((s) => s.name).sort(), ["GET /monitors", "GET /monitors/:id", "POST /monitors"]);
  for (const s of spans) {
    assert.equal(s.resource["service.name"], "pulsewatch-api");
    assert.equal(s.resource["deployment.environment.name"], "test");
    assert.equal(s.kind, 2, "SERVER");
  }
  const continued = spans.find((s) => s.name === "GET /monitors");
  assert.equal(continued.traceId, parentTrace);
  assert.equal(continued.parentSpanId, "00f067aa0ba902b7");
  assert.equal(continued.attributes["http.route"], "/monitors");
  assert.equal(continued.attributes["http.response.status_code"], 200);
  // the store throws on create: a 500, an ERROR span, and the error log names the trace
  const failed = spans.find((s) => s.name === "POST /monitors");
  assert.equal(failed.attributes["http.response.status_code"], 500);
  assert.equal(failed.status.code, 2, "ERROR status");
  const errLog = logs.find((l) => l[0] === "error");
  assert.equal(errLog[2].trace_id, failed.traceId, "error logs carry the trace id");
  assert.ok(collector.requests.every((r) => r.url === "/v1/traces" && r.contentType.startsWith("application/json")));
});

test("routeOf never uses the raw path", () => {
  assert.equal(routeOf({ route: { path: "/monitors/:id" }, baseUrl: "" }), "/monitors/:id");
  assert.equal(routeOf({ path: "/whatever/1" }), "unmatched");
});
