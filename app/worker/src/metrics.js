// Prometheus metrics of the worker, in a registry of its own. Served by a separate listener
// on METRICS_PORT by the shared package's listener (the health port stays for the kubelet
// alone).
import client from "prom-client";

export { metricsServer } from "@pulsewatch/shared/metrics-server";

// Seconds; a check is bounded by its timeout (default 5 s, at most 60 s).
export const CHECK_BUCKETS = [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];

export function createMetrics({ defaultMetrics = true } = {}) {
  const registry = new client.Registry();
  if (defaultMetrics) client.collectDefaultMetrics({ register: registry });
  const checks = new client.Counter({
    name: "pulsewatch_checks_total",
    help: "Monitor checks made, by result: up (the expected status came back) or down.",
    labelNames: ["result"],
    registers: [registry],
  });
  const checkDuration = new client.Histogram({
    name: "pulsewatch_check_duration_seconds",
    help: "Time one monitor check took, by result.",
    labelNames: ["result"],
    buckets: CHECK_BUCKETS,
    registers: [registry],
  });
  const monitorUp = new client.Gauge({
    name: "pulsewatch_monitor_up",
    help: "1 when the last check of the monitor succeeded, 0 when it failed.",
    labelNames: ["monitor_id"],
    registers: [registry],
  });
  const queueDepth = new client.Gauge({
    name: "pulsewatch_check_queue_depth",
    help: "Due monitors of the running cycle not checked yet (0 between cycles).",
    registers: [registry],
  });
  const cycles = new client.Counter({
    name: "pulsewatch_check_cycles_total",
    help: "Check cycles, by outcome: completed, skipped (another replica held the lock) or failed.",
    labelNames: ["outcome"],
    registers: [registry],
  });
  for (const result of ["up", "down"]) checks.inc({ result }, 0);
  for (const outcome of ["completed", "skipped", "failed"]) cycles.inc({ outcome }, 0);
  return {
    registry,
    cycle(outcome) {
      cycles.inc({ outcome });
    },
    queued(n) {
      queueDepth.set(n);
    },
    checked(result, seconds) {
      const label = { result: result.ok ? "up" : "down" };
      checks.inc(label);
      checkDuration.observe(label, seconds);
      monitorUp.set({ monitor_id: String(result.monitorId) }, result.ok ? 1 : 0);
      queueDepth.dec();
    },
  };
}

// A metrics object that records nothing (the default of runCycle).
export const noMetrics = { cycle() {}, queued() {}, checked() {} };
