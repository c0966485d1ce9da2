// Prometheus metrics of the API, in a registry of its own (no global state, so tests can
// make as many as they like). Served by a separate listener on METRICS_PORT, so /metrics
// never goes through the Ingress and the NetworkPolicy can open it to the scraper alone.
import http from "node:http";
import client from "prom-client";

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

// GET /metrics in the Prometheus text format; anything else is 404/405.
export function metricsServer(registry, { log = () => {} } = {}) {
  return http.createServer(async (req, res) => {
    const path = (req.url || "").split("?")[0];
    if (path !== "/metrics") {
      res.writeHead(404, { "content-type": "text/plain" });
      return res.end("not found\n");
    }
    if (req.method !== "GET" && req.method !== "HEAD") {
      res.writeHead(405, { "content-type": "text/plain", allow: "GET, HEAD" });
      return res.end("method not allowed\n");
    }
    try {
      const body = await registry.metrics();
      res.writeHead(200, { "content-type": registry.contentType });
      res.end(req.method === "HEAD" ? undefined : body);
    } catch (err) {
      log("warn", `collecting metrics failed: ${err.message}`);
      res.writeHead(500, { "content-type": "text/plain" });
      res.end("collecting metrics failed\n");
    }
  });
}
