// Configuration from the environment that the api and the worker read alike: Postgres,
// Redis, and the helpers. Secrets are read from files (*_FILE variables that point at the
// mounted Kubernetes Secret), never from plain environment variables.
import { readFileSync } from "node:fs";

export function fromFile(env, name, { optional = false } = {}) {
  const path = env[`${name}_FILE`];
  if (!path) {
    if (optional) return undefined;
    throw new Error(`${name}_FILE is not set`);
  }
  try {
    return readFileSync(path, "utf8").trim();
  } catch (err) {
    if (optional && err.code === "ENOENT") return undefined;
    throw new Error(`failed to read ${name} from ${path}: ${err.message}`);
  }
}

export function int(env, name, fallback) {
  const raw = env[name];
  if (raw === undefined || raw === "") return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n)) throw new Error(`${name} must be an integer, got ${JSON.stringify(raw)}`);
  return n;
}

export function databaseConfig(env) {
  const sslMode = env.DATABASE_SSLMODE || "disable";
  return {
    host: env.DATABASE_HOST || "127.0.0.1",
    port: int(env, "DATABASE_PORT", 5432),
    database: env.DATABASE_NAME || "pulsewatch",
    user: fromFile(env, "DATABASE_USER"),
    password: fromFile(env, "DATABASE_PASSWORD"),
    // require: encrypted; verify-*: encrypted and the server certificate checked.
    ssl: sslMode === "disable" ? false : { rejectUnauthorized: sslMode !== "require" },
    max: int(env, "DATABASE_POOL_SIZE", 5),
    connectionTimeoutMillis: 3000,
  };
}

export function redisConfig(env) {
  const tls = env.REDIS_TLS === "true";
  return {
    host: env.REDIS_HOST || "127.0.0.1",
    port: int(env, "REDIS_PORT", 6379),
    password: fromFile(env, "REDIS_PASSWORD", { optional: true }),
    tls: tls ? {} : undefined,
    lazyConnect: true,
    maxRetriesPerRequest: 1,
    connectTimeout: 3000,
  };
}
