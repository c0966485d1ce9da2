// Configuration of the worker from the environment; what the API reads too (Postgres,
// Redis, secrets from files) comes from the shared package.
import { databaseConfig, int, redisConfig } from "@pulsewatch/shared/config";

export function loadConfig(env = process.env) {
  return {
    healthPort: int(env, "HEALTH_PORT", 3002),
    // 0: no metrics listener. Otherwise GET /metrics on this port (Prometheus format).
    metricsPort: int(env, "METRICS_PORT", 0),
    logLevel: env.LOG_LEVEL || "info",
    intervalSeconds: int(env, "CHECK_INTERVAL_SECONDS", 30),
    timeoutMs: int(env, "CHECK_TIMEOUT_MS", 5000),
    concurrency: int(env, "CHECK_CONCURRENCY", 5),
    database: databaseConfig(env),
    redis: redisConfig(env),
  };
}
