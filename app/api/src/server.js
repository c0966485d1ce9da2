// Wiring: real Postgres pool and Redis client behind the injected interfaces.
import pg from "pg";
import { Redis } from "ioredis";
import { loadConfig } from "./config.js";
import { monitorStore } from "./store.js";
import { createApp } from "./app.js";
import { createMetrics, metricsServer } from "./metrics.js";
import { createTracing } from "@pulsewatch/shared/tracing";

const LEVELS = ["trace", "debug", "info", "warn", "error"];

function logger(level) {
  const min = LEVELS.indexOf(level);
  return (lvl, msg, fields) => {
    if (LEVELS.indexOf(lvl) >= min) console.log(JSON.stringify({ time: new Date().toISOString(), level: lvl, msg, ...fields }));
  };
}

const config = loadConfig();
const log = logger(config.logLevel);
const pool = new pg.Pool(config.database);
pool.on("error", (err) => log("warn", `idle Postgres client failed: ${err.message}`));
const redis = new Redis(config.redis);
redis.on("error", (err) => log("debug", `redis: ${err.message}`));

const metrics = createMetrics();
const tracing = createTracing({ serviceName: "pulsewatch-api" });
if (tracing.enabled) log("info", `sending traces to ${tracing.url}`);

const app = createApp({
  metrics,
  tracing,
  store: monitorStore(pool),
  corsOrigin: config.corsOrigin,
  auth: config.auth,
  log,
  healthChecks: {
    postgres: () => pool.query("SELECT 1"),
    redis: async () => {
      if (redis.status === "wait" || redis.status === "end") await redis.connect();
      const pong = await redis.ping();
      if (pong !== "PONG") throw new Error(`unexpected PING answer ${pong}`);
    },
  },
});

const server = app.listen(config.port, () => log("info", `pulsewatch-api listening on ${config.port}`));
const metricsListener =
  config.metricsPort > 0
    ? metricsServer(metrics.registry, { log }).listen(config.metricsPort, () => log("info", `metrics on ${config.metricsPort}/metrics`))
    : null;

function shutdown(signal) {
  log("info", `${signal}: shutting down`);
  metricsListener?.close();
  server.close(() => {
    Promise.allSettled([pool.end(), redis.quit(), tracing.shutdown()]).then(() => process.exit(0));
  });
  setTimeout(() => process.exit(1), 10000).unref();
}
process.on("SIGTERM", () => shutdown("SIGTERM"));
process.on("SIGINT", () => shutdown("SIGINT"));
