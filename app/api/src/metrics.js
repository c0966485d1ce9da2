// Prometheus metrics of the API, in a registry of its own (no global state, so tests can
// make as many as they like). Served on METRICS_PORT by the shared package's listener.
import client from "prom-client";

export { metricsServer } from "@pulsewatch/shared/metrics-server";

// Seconds; API calls are database round trips, so the interesting range is 5 ms .. 5 s.
export const LATENCY_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5];

export function createMetrics({ defaultMetrics = true } = {}) {
  const registry = new client.Registry();
  if (defaultMetrics) client.collectDefaultMetrics({ register: registry });
  const requests = new client.Counter({
    name: "pulsewatch_http_requests_total",
    help: "HTTP requests answered by the API, by method, route template and status code.",
    labelNames: ["method", "route", "status"],
    registers: [registry],
  });
  const duration = new client.Histogram({
    name: "pulsewatch_http_request_duration_seconds",
    help: "Time from receiving an HTTP request to finishing its response, by method, route template and status code.",
    labelNames: ["method", "route", "status"],
    buckets: LATENCY_BUCKETS,
    registers: [registry],
  });
  return {
    registry,
    // route is the matched route template (e.g. /monitors/:id), never the raw path, so
    // the number of series stays bounded whatever URLs clients send.
    observeRequest(method, route, status, seconds) {
      const labels = { method, route, status: String(status) };
      requests.inc(labels);
      duration.observe(labels, seconds);
    },
  };
}
