import { createRoute, OpenAPIHono, z } from "@hono/zod-openapi";
import type { Context } from "hono";
import { cors } from "hono/cors";
import { secureHeaders } from "hono/secure-headers";
import { docs } from "./docs.ts";
import { completeDocument } from "./openapi.ts";
import { Drain } from "./drain.ts";
import type { AppDeps, AppEnv } from "./env.ts";
import { problem, problemFor } from "./problem.ts";
import { requestBody } from "./request_body.ts";
import { requestId } from "./request_id.ts";
import { rejectNul } from "./nul_guard.ts";
import { adminPatients } from "./erasure.ts";
import { validationHook } from "./validation.ts";
import { system } from "./system.ts";
import { HttpMetrics } from "../metrics.ts";
import { methodLabel, metricsRoutes } from "./metrics.ts";
import { authRoutes } from "./auth.ts";
import { me, users } from "./users.ts";
import { mfa } from "./mfa.ts";
import { patients } from "./patients.ts";
import { myProxies, proxies } from "./proxies.ts";
import { encounters, patientEncounters } from "./encounters.ts";
import { encounterChart, patientChart } from "./chart.ts";
import { encounterMedia, media, patientMedia } from "./media.ts";
import { clinics } from "./clinics.ts";
import { practitioners } from "./practitioners.ts";
import { adminOutbox, myNotifications } from "./notifications.ts";
import { grantRoutes, myGrantRoutes, patientGrantRoutes } from "./grants.ts";
import { auditTrail } from "./audit.ts";
import { auditDisclosures } from "./audit_disclosures.ts";
import { auditTlog } from "./audit_tlog.ts";
import { breakGlassAudit, patientBreakGlass } from "./break_glass.ts";
import { dashboard } from "./dashboard.ts";
import { analytics } from "./analytics.ts";
import { accessCodes, accessRequests, meAccess, patientAccessRequests } from "./access.ts";

export const API_INFO = {
  title: "Chartlog API",
  version: "0.1.0",
  description: "Event-sourced clinical records and clinical media. Every error is " +
    "RFC 9457 application/problem+json; every action is an event in the audit log.",
};

/** Compiles a Hono route pattern (`/a/:id/*`) into a matcher for 405 detection. */
const patternToRegExp = (path: string): RegExp =>
  new RegExp(
    "^" + path.replace(/[.+?^${}()|[\]\\]/g, "\\$&").replace(/\/\*$/, "(/.*)?")
      .replace(/:[A-Za-z0-9_]+(\{[^}]*\})?/g, "[^/]+") +
      "/?$",
  );

/**
 * Builds the HTTP app: request ids, access logs without PHI, secure headers,
 * CORS, a body size limit, problem+json for every error, and the OpenAPI
 * document generated from the same zod schemas the routes validate with.
 */
export const createApp = (deps: AppDeps): OpenAPIHono<AppEnv> => {
  const app = new OpenAPIHono<AppEnv>({
    defaultHook: validationHook,
  });

  const metrics = new HttpMetrics();
  app.use("*", requestId());
  app.use("*", async (c, next) => {
    c.set("deps", deps);
    const started = performance.now();
    await next();
    const ms = performance.now() - started;
    // the route pattern, never the raw URL: paths and queries can carry identifiers
    deps.log.info({
      requestId: c.get("requestId"),
      method: c.req.method,
      route: c.req.routePath,
      status: c.res.status,
      ms: Math.round(ms * 10) / 10,
    }, "request");
    metrics.observe(methodLabel(c.req.method), c.req.routePath, c.res.status, ms / 1000);
  });
  app.use(
    "*",
    secureHeaders({
      contentSecurityPolicy: {
        defaultSrc: ["'self'"],
        scriptSrc: ["'self'"],
        styleSrc: ["'self'"],
        imgSrc: ["'self'", "data:"],
        frameAncestors: ["'none'"],
      },
      strictTransportSecurity: "max-age=63072000; includeSubDomains",
    }),
  );
  if (deps.config.corsOrigins.length > 0) {
    app.use(
      "*",
      cors({
        origin: deps.config.corsOrigins,
        credentials: true,
        exposeHeaders: ["ETag", "Location", "X-Request-Id", "Retry-After"],
      }),
    );
  }
  const drain = deps.drain ?? new Drain();
  app.use("*", async (c, next) => {
    if (drain.draining) {
      return problem(c, "unavailable", "the server is shutting down", {
        headers: { "Retry-After": "5", Connection: "close" },
      });
    }
    // accepted: from here a shutdown waits for this request (debug: the method only)
    deps.log.debug({ requestId: c.get("requestId"), method: c.req.method }, "request received");
    // uploads read their body in the handler: it counts as arriving until the handler is done
    if (c.req.raw.body && isUpload(c.req.method, c.req.path)) return await drain.receiving(next);
    return await next();
  });
  // every body has a size limit and a deadline; uploads stream theirs and enforce the media
  // limit and their own deadline while reading
  app.use(
    "*",
    requestBody({
      maxBytes: deps.config.maxBodyBytes,
      timeoutSec: deps.config.bodyTimeoutSec,
      skip: (c) => isUpload(c.req.method, c.req.path),
      drain,
    }),
  );
  // after the limit, so a JSON body it reads is a bounded one; uploads are streamed, not read
  app.use("*", rejectNul({ skipBody: isUpload }));

  // each router spells its paths below the prefix it is mounted under
  app.route("/", system);
  app.route("/", metricsRoutes(metrics, deps.config));
  app.route("/docs", docs);
  app.route("/v1/auth", authRoutes(deps));
  app.route("/v1/users", users);
  app.route("/v1/me", me);
  app.route("/v1/me/mfa", mfa);
  app.route("/v1/me/proxies", myProxies);
  app.route("/v1/me/notifications", myNotifications);
  app.route("/v1/admin/outbox", adminOutbox);
  app.route("/v1/admin/patients", adminPatients);
  app.route("/v1/patients", patients);
  app.route("/v1/patients", patientEncounters);
  app.route("/v1/patients", patientChart);
  app.route("/v1/patients", patientMedia);
  app.route("/v1/patients", proxies);
  app.route("/v1/encounters", encounters);
  app.route("/v1/encounters", encounterChart);
  app.route("/v1/encounters", encounterMedia);
  app.route("/v1/media", media);
  app.route("/v1/clinics", clinics);
  app.route("/v1/practitioners", practitioners);
  app.route("/v1/patients", patientGrantRoutes);
  app.route("/v1/patients", patientBreakGlass);
  app.route("/v1/me", myGrantRoutes);
  app.route("/v1/grants", grantRoutes);
  app.route("/v1/audit/break-glass", breakGlassAudit);
  app.route("/v1/analytics", analytics);
  app.route("/v1/audit", auditTrail);
  app.route("/v1/audit", auditDisclosures);
  app.route("/v1/audit", auditTlog);
  app.route("/v1/patients", patientAccessRequests);
  app.route("/v1/access-requests", accessRequests);
  app.route("/v1/me", meAccess);
  app.route("/v1/access-codes", accessCodes);
  app.route("/v1/dashboard", dashboard);
  app.openAPIRegistry.registerComponent("securitySchemes", "bearer", {
    type: "http",
    scheme: "bearer",
    bearerFormat: "JWT",
  });
  app.openAPIRegistry.registerComponent("securitySchemes", "metricsToken", {
    type: "http",
    scheme: "bearer",
    description: "the operator's `CHARTLOG_METRICS_TOKEN`",
  });

  let document: ReturnType<typeof app.getOpenAPI31Document> | undefined;
  app.openapi(
    createRoute({
      method: "get",
      path: "/openapi.json",
      tags: ["system"],
      summary: "This API's OpenAPI 3.1 description",
      responses: {
        200: {
          description: "OpenAPI document",
          content: { "application/json": { schema: z.record(z.string(), z.unknown()) } },
        },
      },
    }),
    (c) => {
      // built on first use, once: the routes do not change after start-up
      document ??= completeDocument(
        app.getOpenAPI31Document({ openapi: "3.1.0", info: API_INFO }),
      );
      return c.json(document, 200);
    },
  );

  app.notFound((c: Context) => {
    const path = new URL(c.req.url).pathname;
    const allowed = [
      ...new Set(
        app.routes
          .filter((r) => r.method !== "ALL" && patternToRegExp(r.path).test(path))
          .map((r) => r.method),
      ),
    ];
    if (allowed.length > 0) {
      if (allowed.includes("GET")) allowed.push("HEAD");
      return problem(c, "method-not-allowed", `${c.req.method} is not allowed here`, {
        headers: { Allow: allowed.join(", ") },
      });
    }
    return problem(c, "not-found", "no such route");
  });

  app.onError((err, c) => {
    const p = problemFor(err);
    if (p.slug === "internal") {
      const e = err as Error & { code?: string };
      // name, code and stack frames only: an error message may quote input (PHI)
      const frames = e.stack?.split("\n").filter((l) => l.trimStart().startsWith("at ")).join("\n");
      deps.log.error(
        { requestId: c.get("requestId"), err: { name: e.name, code: e.code, frames } },
        "unhandled error",
      );
      return problem(c, "internal", "an unexpected error occurred; quote the request id");
    }
    if (p.slug === "unavailable") {
      const e = err as Error & { code?: string };
      deps.log.warn(
        { requestId: c.get("requestId"), err: { name: e.name, code: e.code } },
        "unavailable",
      );
    }
    return problem(c, p.slug, p.detail, { errors: p.errors, headers: p.headers });
  });

  return app;
};

/** The upload routes, which read a large multipart body as a stream. */
const isUpload = (method: string, path: string) =>
  method === "POST" && /^\/v1\/(encounters\/[^/]+\/media|patients\/[^/]+\/documents)$/.test(path);
