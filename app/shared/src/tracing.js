// Traces over OTLP/HTTP (JSON body) when OTEL_EXPORTER_OTLP_ENDPOINT or
// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is set. Without either, the tracer is a no-op: nothing
// is recorded, buffered or sent. Spans are parented explicitly (no global context manager),
// and an incoming W3C `traceparent` header continues the caller's trace.
import { trace, ROOT_CONTEXT, SpanStatusCode, defaultTextMapGetter } from "@opentelemetry/api";
import {
  TracerProvider,
  BatchSpanProcessor,
  ParentBasedSampler,
  TraceIdRatioBasedSampler,
  AlwaysOnSampler,
  AlwaysOffSampler,
} from "@opentelemetry/sdk-trace";
import { OTLPTraceExporter } from "@opentelemetry/exporter-trace-otlp-http";
import { resourceFromAttributes } from "@opentelemetry/resources";
import { W3CTraceContextPropagator } from "@opentelemetry/core";

// The traces URL the OpenTelemetry spec derives from the environment: the signal-specific
// variable as is, else the generic endpoint plus /v1/traces. Empty when tracing is off.
export function tracesUrl(env) {
  const specific = (env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT || "").trim();
  if (specific) return specific;
  const base = (env.OTEL_EXPORTER_OTLP_ENDPOINT || "").trim();
  if (!base) return "";
  return `${base.replace(/\/+$/, "")}/v1/traces`;
}

// OTEL_RESOURCE_ATTRIBUTES: comma-separated key=value pairs, values percent-encoded.
export function parseResourceAttributes(raw = "") {
  const out = {};
  for (const pair of raw.split(",")) {
    const i = pair.indexOf("=");
    if (i <= 0) continue;
    const key = pair.slice(0, i).trim();
    try {
      out[key] = decodeURIComponent(pair.slice(i + 1).trim());
    } catch {
      out[key] = pair.slice(i + 1).trim();
    }
  }
  return out;
}

export function samplerFromEnv(env) {
  const name = (env.OTEL_TRACES_SAMPLER || "parentbased_always_on").trim();
  const arg = Number.parseFloat(env.OTEL_TRACES_SAMPLER_ARG ?? "1");
  const ratio = Number.isFinite(arg) && arg >= 0 && arg <= 1 ? arg : 1;
  switch (name) {
    case "always_on":
      return new AlwaysOnSampler();
    case "always_off":
      return new AlwaysOffSampler();
    case "traceidratio":
      return new TraceIdRatioBasedSampler(ratio);
    case "parentbased_traceidratio":
      return new ParentBasedSampler({ root: new TraceIdRatioBasedSampler(ratio) });
    case "parentbased_always_off":
      return new ParentBasedSampler({ root: new AlwaysOffSampler() });
    default:
      return new ParentBasedSampler({ root: new AlwaysOnSampler() });
  }
}

const propagator = new W3CTraceContextPropagator();

// env: the process environment; serviceName: default for OTEL_SERVICE_NAME.
// exporter: a SpanExporter to use instead of OTLP (tests).
export function createTracing({ env = process.env, serviceName, serviceVersion = "0.1.0", exporter } = {}) {
  const url = tracesUrl(env);
  if (!url && !exporter) {
    return {
      enabled: false,
      url: "",
      tracer: trace.getTracer(serviceName),
      extract: () => ROOT_CONTEXT,
      traceId: () => undefined,
      forceFlush: async () => {},
      shutdown: async () => {},
    };
  }
  const resource = resourceFromAttributes({
    ...parseResourceAttributes(env.OTEL_RESOURCE_ATTRIBUTES),
    "service.name": env.OTEL_SERVICE_NAME || serviceName,
    "service.version": serviceVersion,
  });
  const provider = new TracerProvider({
    resource,
    sampler: samplerFromEnv(env),
    spanProcessors: [
      new BatchSpanProcessor({
        exporter: exporter ?? new OTLPTraceExporter({ url, timeoutMillis: 5000 }),
        scheduledDelayMillis: 2000,
        maxQueueSize: 2048,
      }),
    ],
  });
  return {
    enabled: true,
    url,
    tracer: provider.getTracer(serviceName, serviceVersion),
    // The parent context from incoming HTTP headers (W3C traceparent/tracestate).
    extract: (headers) => propagator.extract(ROOT_CONTEXT, headers ?? {}, defaultTextMapGetter),
    traceId: (span) => {
      const ctx = span?.spanContext();
      return ctx && ctx.traceFlags & 1 ? ctx.traceId : undefined;
    },
    forceFlush: () => provider.forceFlush(),
    shutdown: () => provider.shutdown(),
  };
}

// Marks a span failed with the error's message.
export function failSpan(span, err) {
  span.recordException(err);
  span.setStatus({ code: SpanStatusCode.ERROR, message: err.message });
}
