// The Express application. Dependencies are injected: a monitor store and the health
// checks, so tests drive the real routes with fakes.
import express from "express";
import { validateMonitor, parseId } from "./monitors.js";
import { aggregateHealth } from "@pulsewatch/shared/health";
import { requireToken } from "./auth.js";
import { observeRequests } from "./observe.js";

// auth: { required, secret } - when required, POST/PUT/DELETE need a valid bearer JWT.
// metrics (src/metrics.js) and tracing (@pulsewatch/shared/tracing) are optional: without them the
// requests are neither counted nor traced.
export function createApp({ store, healthChecks, corsOrigin = "", auth = { required: false }, log = () => {}, metrics, tracing }) {
  const writes = requireToken(auth);
  const app = express();
  app.disable("x-powered-by");
  // First, so that every request is timed, including the ones rejected by body parsing.
  app.use(observeRequests({ metrics, tracing }));
  app.use(express.json({ limit: "16kb" }));

  app.use((req, res, next) => {
    if (corsOrigin) {
      res.set("Access-Control-Allow-Origin", corsOrigin);
      res.set("Vary", "Origin");
      res.set("Access-Control-Allow-Methods", "GET,POST,PUT,DELETE");
      res.set("Access-Control-Allow-Headers", "Content-Type, Authorization");
    }
    if (req.method === "OPTIONS") return res.status(204).end();
    next();
  });

  // Liveness: the process serves requests. Says nothing about dependencies on purpose,
  // so a database outage does not restart every API pod.
  app.get("/health/live", (req, res) => res.json({ status: "ok" }));

  // Readiness: Postgres and Redis both answer.
  app.get("/health", async (req, res) => {
    const report = await aggregateHealth(healthChecks);
    res.status(report.status === "ok" ? 200 : 503).json(report);
  });

  app.get("/monitors", async (req, res) => {
    res.json(await store.list());
  });

  app.post("/monitors", writes, async (req, res) => {
    const v = validateMonitor(req.body);
    if (!v.ok) return res.status(400).json({ errors: v.errors });
    res.status(201).json(await store.create(v.value));
  });

  app.get("/monitors/:id", async (req, res) => {
    const id = parseId(req.params.id);
    const monitor = id && (await store.get(id));
    if (!monitor) return res.status(404).json({ errors: ["monitor not found"] });
    res.json(monitor);
  });

  app.put("/monitors/:id", writes, async (req, res) => {
    const id = parseId(req.params.id);
    if (!id) return res.status(404).json({ errors: ["monitor not found"] });
    const v = validateMonitor(req.body);
    if (!v.ok) return res.status(400).json({ errors: v.errors });
    const monitor = await store.update(id, v.value);
    if (!monitor) return res.status(404).json({ errors: ["monitor not found"] });
    res.json(monitor);
  });

  app.delete("/monitors/:id", writes, async (req, res) => {
    const id = parseId(req.params.id);
    if (!id || !(await store.remove(id))) return res.status(404).json({ errors: ["monitor not found"] });
    res.status(204).end();
  });

  app.get("/monitors/:id/results", async (req, res) => {
    const id = parseId(req.params.id);
    if (!id || !(await store.get(id))) return res.status(404).json({ errors: ["monitor not found"] });
    const limit = Math.min(Math.max(Number.parseInt(req.query.limit ?? "50", 10) || 50, 1), 500);
    res.json(await store.results(id, limit));
  });

  app.use((req, res) => res.status(404).json({ errors: ["not found"] }));

  // Express 5 forwards rejected promises here.
  app.use((err, req, res, next) => {
    if (err.type === "entity.parse.failed") return res.status(400).json({ errors: ["body is not valid JSON"] });
    if (err.type === "entity.too.large") return res.status(413).json({ errors: ["body is too large"] });
    const traceId = tracing?.traceId(res.locals.span);
    log("error", `${req.method} ${req.path} failed: ${err.message}`, traceId ? { trace_id: traceId } : undefined);
    res.status(500).json({ errors: ["internal error"] });
  });

  return app;
}
