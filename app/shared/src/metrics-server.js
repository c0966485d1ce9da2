// The /metrics listener the api and the worker both run: a separate port, so /metrics never
// goes through the Ingress and the NetworkPolicy can open it to the scraper alone.
import http from "node:http";

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
