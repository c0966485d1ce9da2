// One middleware for both signals: a SERVER span per request (continuing an incoming W3C
// trace) and the request counter and latency histogram. Both are labelled with the matched
// route template, known only once the response is finished.
import { SpanKind, SpanStatusCode } from "@opentelemetry/api";

// Probes hit these every few seconds: counted in the metrics, but not traced.
const UNTRACED = new Set(["/health", "/health/live"]);

export function routeOf(req) {
  if (req.route?.path) return `${req.baseUrl || ""}${req.route.path}`;
  return "unmatched";
}

export function observeRequests({ metrics, tracing, clock = () => process.hrtime.bigint() } = {}) {
  if (!metrics && !tracing?.enabled) return (req, res, next) => next();
  return (req, res, next) => {
    const started = clock();
    let span;
    if (tracing?.enabled && !UNTRACED.has(req.path)) {
      span = tracing.tracer.startSpan(
        req.method,
        {
          kind: SpanKind.SERVER,
          attributes: { "http.request.method": req.method, "url.path": req.path, "url.scheme": req.protocol },
        },
        tracing.extract(req.headers),
      );
      res.locals.span = span;
    }
    res.on("finish", () => {
      const route = routeOf(req);
      const status = res.statusCode;
      if (metrics) metrics.observeRequest(req.method, route, status, Number(clock() - started) / 1e9);
      if (span) {
        span.updateName(`${req.method} ${route}`);
        span.setAttribute("http.route", route);
        span.setAttribute("http.response.status_code", status);
        if (status >= 500) span.setStatus({ code: SpanStatusCode.ERROR });
        span.end();
      }
    });
    next();
  };
}
