import { test } from "node:test";
import assert from "node:assert/strict";
import { runCycle, LOCK_KEY } from "../src/runner.js";
import { createMetrics, metricsServer } from "../src/metrics.js";
import { createTracing } from "@pulsewatch/shared/tracing";
import { fakeRedis } from "./fake-redis.js";
import { otlpStandIn } from "../../shared/test/otlp-standin.js";

const now = () => new Date("2026-01-01T00:00:00Z");
const monitors = [
  { id: 1, url: "https://up.example.com/health?token=abc", intervalSeconds: 60, enabled: true, lastCheckedAt: null },
  { id: 2, url: "https://down.example.com/", intervalSeconds: 60, enabled: true, lastCheckedAt: null },
  { id: 3, url: "https://up.example.org/", intervalSeconds: 60, enabled: true, lastCheckedAt: null },
  { id: 4, url: "https://not-due.example.com/", intervalSeconds: 60, enabled: true, lastCheckedAt: new Date("2025-12-31T23:59:30Z") },
];
const store = () => ({ enabledMonitors: async () => monitors, saveResult: async () => {} });

async function scrape(registry) {
  const server = metricsServer(registry);
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  try {
    const res = await fetch(`http://127.0.0.1:${server.address().port}/metrics`);
    assert.equal(res.status, 200);
    assert.match(res.headers.get("content-type"), /^text\/plain; version=0\.0\.4/);
    return await res.text();
  } finally {
    await new Promise((resolve) => server.close(resolve));
  }
}

test("/metrics reports check results, monitor up/down, queue depth and cycles", async () => {
  const metrics = createMetrics();
  const depthsSeen = [];
  const check = async (m) => {
    depthsSeen.push((await metrics.registry.getSingleMetric("pulsewatch_check_queue_depth").get()).values[0].value);
    return { monitorId: m.id, ok: m.id !== 2, statusCode: m.id === 2 ? 503 : 200, latencyMs: 3, error: m.id === 2 ? "expected status 200, got 503" : null };
  };
  await runCycle({ store: store(), redis: fakeRedis(), now, check, metrics, concurrency: 1 });
  assert.deepEqual(depthsSeen, [3, 2, 1], "the queue drains as checks finish");

  const held = fakeRedis();
  held.data.set(LOCK_KEY, "other");
  await runCycle({ store: store(), redis: held, now, check, metrics });
  await assert.rejects(runCycle({ store: { enabledMonitors: async () => { throw new Error("db down"); } }, redis: fakeRedis(), now, metrics }));

  const text = await scrape(metrics.registry);
  assert.match(text, /^pulsewatch_checks_total\{result="up"\} 2$/m);
  assert.match(text, /^pulsewatch_checks_total\{result="down"\} 1$/m);
  assert.match(text, /^pulsewatch_monitor_up\{monitor_id="1"\} 1$/m);
  assert.match(text, /^pulsewatch_monitor_up\{monitor_id="2"\} 0$/m);
  assert.doesNotMatch(text, /monitor_id="4"/, "monitors that were not due are not reported");
  assert.match(text, /^pulsewatch_check_queue_depth 0$/m);
  assert.match(text, /^pulsewatch_check_cycles_total\{outcome="completed"\} 1$/m);
  assert.match(text, /^pulsewatch_check_cycles_total\{outcome="skipped"\} 1$/m);
  assert.match(text, /^pulsewatch_check_cycles_total\{outcome="failed"\} 1$/m);
  assert.match(text, /^pulsewatch_check_duration_seconds_count\{result="up"\} 2$/m);
  assert.match(text, /^# TYPE pulsewatch_check_duration_seconds histogram$/m);
  assert.match(text, /^nodejs_eventloop_lag_seconds /m, "default Node.js metrics");
});

test("a fresh worker already exports zero counters (rate() works from the first scrape)", async () => {
  const text = await scrape(createMetrics({ defaultMetrics: false }).registry);
  assert.match(text, /^pulsewatch_checks_total\{result="down"\} 0$/m);
  assert.match(text, /^pulsewatch_check_cycles_total\{outcome="skipped"\} 0$/m);
});

test("a cycle is exported over OTLP/HTTP: one cycle span, one child span per check", async () => {
  const collector = await otlpStandIn();
  const tracing = createTracing({ env: { OTEL_EXPORTER_OTLP_ENDPOINT: collector.endpoint, OTEL_SERVICE_NAME: "worker-under-test" }, serviceName: "pulsewatch-worker" });
  try {
    assert.equal(tracing.enabled, true);
    const check = async (m) => ({ monitorId: m.id, ok: m.id !== 2, statusCode: m.id === 2 ? 503 : 200, latencyMs: 1, error: m.id === 2 ? "expected status 200, got 503" : null });
    const logs = [];
    await runCycle({ store: store(), redis: fakeRedis(), now, check, tracer: tracing.tracer, log: (...a) => logs.push(a) });
    // skipped cycles make no spans
    const held = fakeRedis();
    held.data.set(LOCK_KEY, "other");
    await runCycle({ store: store(), redis: held, now, check, tracer: tracing.tracer });
    await tracing.forceFlush();

    assert.equal(collector.spans.length, 4, `got ${collector.spans.map((s) => s.name)}`);
    const [cycle] = collector.spans.filter((s) => s.name === "check cycle");
    const children = collector.spans.filter((s) => s.name === "check monitor");
    assert.equal(children.length, 3);
    for (const c of children) {
      assert.equal(c.traceId, cycle.traceId);
      assert.equal(c.parentSpanId, cycle.spanId);
      assert.equal(c.kind, 3, "CLIENT");
      assert.equal(c.resource["service.name"], "worker-under-test");
      assert.ok(!JSON.stringify(c.attributes).includes("token=abc"), "no query strings in spans");
    }
    const down = children.find((c) => c.attributes["pulsewatch.monitor.id"] === 2);
    assert.equal(down.status.code, 2, "a failed check is an ERROR span");
    assert.equal(down.attributes["http.response.status_code"], 503);
    assert.equal(children.find((c) => c.attributes["pulsewatch.monitor.id"] === 1).attributes["server.address"], "up.example.com");
    assert.equal(cycle.attributes["pulsewatch.monitors.due"], 3);
    const info = logs.find((l) => l[0] === "info");
    assert.equal(info[2].trace_id, cycle.traceId, "the cycle's log line names its trace");
  } finally {
    await tracing.shutdown();
    await collector.close();
  }
});

test("without an endpoint the worker traces nothing", () => {
  const off = createTracing({ env: {}, serviceName: "pulsewatch-worker" });
  assert.equal(off.enabled, false);
  assert.equal(off.tracer.startSpan("x").isRecording(), false);
});
