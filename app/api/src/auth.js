// Bearer-token check for the write routes: HS256 JWTs signed with the jwt-secret from
// Secret pulsewatch-app. Tokens are minted outside the API (an operator tool or the
// identity provider in front of it); the API only verifies them.
import { createHmac, timingSafeEqual } from "node:crypto";

function b64urlJson(part) {
  return JSON.parse(Buffer.from(part, "base64url").toString("utf8"));
}

// Returns { ok: true, claims } or { ok: false, error }. nowSeconds is injectable for tests.
export function verifyJwt(token, secret, nowSeconds = Math.floor(Date.now() / 1000)) {
  if (typeof token !== "string") return { ok: false, error: "missing token" };
  const parts = token.split(".");
  if (parts.length !== 3) return { ok: false, error: "malformed token" };
  const [h, p, sig] = parts;
  let header;
  let claims;
  try {
    header = b64urlJson(h);
    claims = b64urlJson(p);
  } catch {
    return { ok: false, error: "malformed token" };
  }
  // Only HS256: never let the token choose "none" or another algorithm.
  if (header.alg !== "HS256") return { ok: false, error: `unsupported algorithm ${JSON.stringify(header.alg)}` };
  const expected = createHmac("sha256", secret).update(`${h}.${p}`).digest();
  const given = Buffer.from(sig, "base64url");
  if (given.length !== expected.length || !timingSafeEqual(given, expected)) return { ok: false, error: "bad signature" };
  if (typeof claims.exp !== "number") return { ok: false, error: "token has no exp" };
  if (nowSeconds >= claims.exp) return { ok: false, error: "token expired" };
  if (typeof claims.nbf === "number" && nowSeconds < claims.nbf) return { ok: false, error: "token not valid yet" };
  return { ok: true, claims };
}

// Express middleware: when required, writes need `Authorization: Bearer <jwt>`.
export function requireToken({ required, secret, now }) {
  return (req, res, next) => {
    if (!required) return next();
    const header = req.get("authorization") || "";
    const match = /^Bearer (\S+)$/.exec(header);
    const result = verifyJwt(match ? match[1] : undefined, secret, now ? now() : undefined);
    if (!result.ok) {
      res.set("WWW-Authenticate", 'Bearer realm="pulsewatch"');
      return res.status(401).json({ errors: [`unauthorized: ${result.error}`] });
    }
    req.claims = result.claims;
    next();
  };
}
