// Wiring: Postgres pool, Redis client, the check loop and the health endpoint.
import http from "node:http";
import pg from "pg";
import { Redis } from "ioredis";
import { loadConfig } from "./config.js";
import { aggregateHealth } from "@pulsewatch/shared/health";
import { runCycle, pgStore } from "./runner.js";
import { checkMonitor } from "./checker.js";
import { loopState, startLoop } from "./loop.js";
import { createMetrics, metricsServer } from "./metrics.js";
import { createTracing } from "@pulsewatch/shared/tracing";

const LEVELS = ["trace", "debug", "info", "warn", "error"];
const config = loadConfig();
const min = LEVELS.indexOf(config.logLevel);
const log = (lvl, msg, fields) => {
  if (LEVELS.indexOf(lvl) >= min) console.log(JSON.stringify({ time: new Date().toISOString(), level: lvl, msg, ...fields }));
};
const metrics = createMetrics();
const tracing = createTracing({ serviceName: "pulsewatch-worker" });
if (tracing.enabled) log("info", `sending traces to ${tracing.url}`);

const pool = new pg.Pool(config.database);
pool.on("error", (err) => log("warn", `idle Postgres client failed: ${err.message}`));
const redis = new Redis(config.redis);
redis.on("error", (err) => log("debug", `redis: ${err.message}`));

const intervalMs = config.intervalSeconds * 1000;
// Checks by the checks' own timeouts are bounded, so a cycle that has not finished in five
// intervals (and at least two minutes) means the loop is wedged.
const state = loopState({ staleAfterMs: Math.max(5 * intervalMs, 120000) });
const store = pgStore(pool);
const stop = startLoop({
  intervalMs,
  state,
  log,
  cycle: () =>
    runCycle({
      store,
      redis,
      concurrency: config.concurrency,
      lockTtlMs: Math.max(intervalMs, 60000),
      check: (m) => checkMonitor(m, { defaultTimeoutMs: config.timeoutMs }),
      log,
      metrics,
      tracer: tracing.tracer,
    }),
});

const healthChecks = {
  postgres: () => pool.query("SELECT 1"),
  redis: async () => {
    if (redis.status === "wait" || redis.status === "end") await redis.connect();
    await redis.ping();
  },
};

const server = http.createServer(async (req, res) => {
  const send = (status, body) => {
    res.writeHead(status, { "content-type": "application/json" });
    res.end(JSON.stringify(body));
  };
  if (req.method !== "GET") return send(405, { errors: ["method not allowed"] });
  if (req.url === "/health/live") {
    return state.live() ? send(200, { status: "ok", loop: state.snapshot() }) : send(503, { status: "stale", loop: state.snapshot() });
  }
  if (req.url === "/health") {
    const report = await aggregateHealth(healthChecks);
    return send(report.status === "ok" ? 200 : 503, { ...report, loop: state.snapshot() });
  }
  send(404, { errors: ["not found"] });
});
server.listen(config.healthPort, () => log("info", `pulsewatch-worker health on ${config.healthPort}`));
const metricsListener =
  config.metricsPort > 0
    ? metricsServer(metrics.registry, { log }).listen(config.metricsPort, () => log("info", `metrics on ${config.metricsPort}/metrics`))
    : null;

function shutdown(signal) {
  log("info", `${signal}: shutting down`);
  stop();
  server.close();
  metricsListener?.close();
  Promise.allSettled([pool.end(), redis.quit(), tracing.shutdown()]).then(() => process.exit(0));
  setTimeout(() => process.exit(1), 10000).unref();
}
process.on("SIGTERM", () => shutdown("SIGTERM"));
process.on("SIGINT", () => shutdown("SIGINT"));
