// Configuration of the API from the environment; what the worker reads too (Postgres,
// Redis, secrets from files) comes from the shared package.
import { databaseConfig, fromFile, int, redisConfig } from "@pulsewatch/shared/config";

export function authConfig(env) {
  const required = env.AUTH_REQUIRED === "true";
  // The secret is read only when it is needed, so dev runs without one.
  return { required, secret: required ? fromFile(env, "JWT_SECRET") : undefined };
}

export function loadConfig(env = process.env) {
  return {
    port: int(env, "PORT", 3001),
    // 0: no metrics listener. Otherwise GET /metrics on this port (Prometheus format).
    metricsPort: int(env, "METRICS_PORT", 0),
    auth: authConfig(env),
    logLevel: env.LOG_LEVEL || "info",
    corsOrigin: env.CORS_ORIGIN || "",
    database: databaseConfig(env),
    redis: redisConfig(env),
  };
}
