import { createHash, timingSafeEqual } from "node:crypto";
import { createRoute, OpenAPIHono, z } from "@hono/zod-openapi";
import type { Context } from "hono";
import type { Config } from "../config.ts";
import { NotFoundError, UnauthorizedError } from "../errors.ts";
import { exposition, EXPOSITION_CONTENT_TYPE, type HttpMetrics } from "../metrics.ts";
import type { AppEnv } from "./env.ts";
import { problemResponses } from "./problem.ts";

const METHODS = new Set(["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]);

/** A method label from a bounded set: a client can send any token as a method. */
export const methodLabel = (method: string): string => METHODS.has(method) ? method : "OTHER";

const digest = (s: string) => createHash("sha256").update(s).digest();

/**
 * Whether the request carries the metrics token. Both sides are hashed
 * first so that the comparison is constant-time whatever the lengths.
 */
const tokenMatches = (c: Context<AppEnv>, token: string): boolean => {
  const m = /^Bearer +(\S+) *$/i.exec(c.req.header("authorization") ?? "");
  return m !== null && timingSafeEqual(digest(m[1]!), digest(token));
};

/**
 * `GET /metrics`, Prometheus text exposition: this app's request metrics,
 * the runtime's log metrics and the process metrics. Not a policy action:
 * with `CHARTLOG_METRICS_TOKEN` it takes that bearer token (401 without);
 * without one it is open, except in production, where it is off (404) so
 * that a forgotten token never exposes it.
 */
export const metricsRoutes = (http: HttpMetrics, config: Config): OpenAPIHono<AppEnv> =>
  new OpenAPIHono<AppEnv>().openapi(
    createRoute({
      method: "get",
      path: "/metrics",
      tags: ["system"],
      summary: "Prometheus metrics (bearer `CHARTLOG_METRICS_TOKEN` when set)",
      description: "Request counts and latencies by route pattern and status, events appended " +
        "by type, group-commit batch sizes, async projection lag, process metrics. Labels carry " +
        "no PHI and no ids. Without a token configured it is open, except under " +
        "`CHARTLOG_ENV=production`, where it answers 404.",
      security: [{ metricsToken: [] }],
      responses: {
        200: {
          description: "text exposition format 0.0.4",
          content: { "text/plain": { schema: z.string() } },
        },
        ...problemResponses("unauthorized", "not-found"),
      },
    }),
    async (c) => {
      const token = config.metricsToken;
      if (token === null && config.env === "production") {
        throw new NotFoundError("metrics are off: set CHARTLOG_METRICS_TOKEN");
      }
      if (token !== null && !tokenMatches(c, token)) {
        throw new UnauthorizedError("the metrics bearer token is required");
      }
      // before the runtime is open (503 elsewhere) the HTTP and process metrics still answer
      let store: Parameters<typeof exposition>[0] = [];
      try {
        store = [c.var.deps.runtime().metrics.registry];
      } catch { /* not open yet */ }
      const text = await exposition([http.registry, ...store]);
      return c.text(text, 200, {
        "Content-Type": EXPOSITION_CONTENT_TYPE,
        "Cache-Control": "no-store",
      });
    },
  );
