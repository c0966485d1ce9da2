import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { loadConfig } from "../src/config.js";

function secrets() {
  const dir = mkdtempSync(join(tmpdir(), "pw-secrets-"));
  writeFileSync(join(dir, "username"), "pulsewatch\n");
  writeFileSync(join(dir, "password"), "s3cret\n");
  return dir;
}

test("credentials come from the mounted files", () => {
  const dir = secrets();
  const c = loadConfig({
    DATABASE_HOST: "db",
    DATABASE_SSLMODE: "verify-full",
    DATABASE_USER_FILE: join(dir, "username"),
    DATABASE_PASSWORD_FILE: join(dir, "password"),
    REDIS_PASSWORD_FILE: join(dir, "missing"),
    REDIS_TLS: "true",
  });
  assert.equal(c.database.user, "pulsewatch");
  assert.equal(c.database.password, "s3cret");
  assert.deepEqual(c.database.ssl, { rejectUnauthorized: true });
  assert.equal(c.redis.password, undefined);
  assert.deepEqual(c.redis.tls, {});
});

test("a missing required secret file is an error naming the variable", () => {
  assert.throws(() => loadConfig({ DATABASE_USER_FILE: "/nonexistent/u", DATABASE_PASSWORD_FILE: "/x" }), /failed to read DATABASE_USER from \/nonexistent\/u/);
  assert.throws(() => loadConfig({}), /DATABASE_USER_FILE is not set/);
});

test("ports must be integers", () => {
  const dir = secrets();
  assert.throws(
    () => loadConfig({ PORT: "abc", DATABASE_USER_FILE: join(dir, "username"), DATABASE_PASSWORD_FILE: join(dir, "password") }),
    /PORT must be an integer/,
  );
});

test("the JWT secret is read only when auth is required", () => {
  const dir = secrets();
  const base = { DATABASE_USER_FILE: join(dir, "username"), DATABASE_PASSWORD_FILE: join(dir, "password") };
  assert.deepEqual(loadConfig(base).auth, { required: false, secret: undefined });
  assert.throws(() => loadConfig({ ...base, AUTH_REQUIRED: "true" }), /JWT_SECRET_FILE is not set/);
  const c = loadConfig({ ...base, AUTH_REQUIRED: "true", JWT_SECRET_FILE: join(dir, "password") });
  assert.deepEqual(c.auth, { required: true, secret: "s3cret" });
});
