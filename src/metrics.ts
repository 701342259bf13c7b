import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from "prom-client";
import type { EventStore } from "./store/event_store.ts";
import { projectionStatus } from "./store/projection_engine.ts";
import type { Projection } from "./store/types.ts";

/**
 * Every Prometheus metric the service exposes is registered here. Each app
 * and each runtime has registries of its own (tests open many in one
 * process; prom-client's global registry would refuse the second), and
 * labels carry only bounded, PHI-free values: route patterns, methods,
 * statuses, event types and projection names, never a URL or an id.
 */

const SECONDS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];

/** Request counts and latencies of one HTTP app. */
export class HttpMetrics {
  readonly registry = new Registry();
  readonly #requests = new Counter({
    name: "chartlog_http_requests_total",
    help: "HTTP requests answered, by method, route pattern and status.",
    labelNames: ["method", "route", "status"] as const,
    registers: [this.registry],
  });
  readonly #duration = new Histogram({
    name: "chartlog_http_request_duration_seconds",
    help: "HTTP request latency in seconds, by method, route pattern and status.",
    labelNames: ["method", "route", "status"] as const,
    buckets: SECONDS,
    registers: [this.registry],
  });

  /** `route` is Hono's matched pattern (`/v1/patients/:id`), never the raw path. */
  observe(method: string, route: string, status: number, seconds: number): void {
    const labels = { method, route, status: String(status) };
    this.#requests.inc(labels);
    this.#duration.observe(labels, seconds);
  }
}

/**
 * One runtime's metrics: events appended by type and the size of each
 * group-commit transaction (counted as appends commit), each async
 * projection's lag (read from projection_state on scrape), and the steps of
 * stored uploads.
 */
export class RuntimeMetrics {
  readonly registry = new Registry();
  readonly #uploadSteps = new Histogram({
    name: "chartlog_upload_step_duration_seconds",
    help: "Time per step of the upload pipeline (stored uploads), by media kind and step.",
    labelNames: ["kind", "step"] as const,
    buckets: SECONDS,
    registers: [this.registry],
  });

  constructor(store: EventStore, projections: readonly Projection[]) {
    const appended = new Counter({
      name: "chartlog_events_appended_total",
      help: "Events appended to the log by this process, by event type.",
      labelNames: ["type"] as const,
      registers: [this.registry],
    });
    const batches = new Histogram({
      name: "chartlog_append_batch_events",
      help: "Events committed per group-commit transaction.",
      buckets: [1, 2, 5, 10, 25, 50, 100, 250, 500, 1000],
      registers: [this.registry],
    });
    store.onCommit((types) => {
      batches.observe(types.length);
      for (const type of types) appended.inc({ type });
    });
    const async = projections.filter((p) => p.mode === "async");
    new Gauge({
      name: "chartlog_projection_lag_events",
      help: "Events in the log an async projection has not folded yet.",
      labelNames: ["projection"] as const,
      registers: [this.registry],
      async collect() {
        if (async.length === 0) return;
        // a database that cannot answer leaves the last values; /ready reports the outage
        const status = await projectionStatus(store, async).catch(() => null);
        for (const s of status ?? []) this.set({ projection: s.name }, s.lag);
      },
    });
  }

  /** The step timings (milliseconds) of one stored upload (`StepTimings` of media/pipeline.ts). */
  observeUpload(kind: string, timings: Readonly<Record<string, number | undefined>>): void {
    for (const [step, ms] of Object.entries(timings)) {
      if (ms !== undefined) this.#uploadSteps.observe({ kind, step }, ms / 1000);
    }
  }
}

let processRegistry: Registry | null = null;

/**
 * prom-client's default process metrics (CPU, RSS, heap, event loop, GC):
 * one registry per process, made on first use, since they describe the
 * process and some install observers that should exist once.
 */
const processMetrics = (): Registry => {
  if (!processRegistry) {
    processRegistry = new Registry();
    collectDefaultMetrics({ register: processRegistry, prefix: "chartlog_" });
  }
  return processRegistry;
};

/** The content type of the text exposition format. */
export const EXPOSITION_CONTENT_TYPE = Registry.PROMETHEUS_CONTENT_TYPE;

/** The exposition text of the given registries plus the process metrics. */
export const exposition = async (registries: readonly Registry[]): Promise<string> =>
  (await Promise.all([...registries, processMetrics()].map((r) => r.metrics())))
    .filter((t) => t.trim() !== "").join("\n");
