import { createRoute, OpenAPIHono, z } from "@hono/zod-openapi";
import { currentMigration, latestMigration } from "../store/migrations.ts";
import { projectionStatus } from "../store/projection_engine.ts";
import type { AppEnv } from "./env.ts";
import { NotFoundError, UnavailableError } from "../errors.ts";
import { problemResponses, PROBLEMS, type ProblemSlug } from "./problem.ts";

const Health = z.object({ status: z.literal("ok") }).openapi("Health");

const Index = z.object({
  service: z.literal("chartlog"),
  docs: z.literal("/docs").openapi({ description: "interactive API documentation" }),
  openapi: z.literal("/openapi.json").openapi({ description: "the OpenAPI 3.1 document" }),
  health: z.literal("/health"),
  ready: z.literal("/ready"),
}).openapi("Index");

const ProjectionLag = z.object({
  name: z.string(),
  mode: z.enum(["inline", "async"]),
  version: z.number().int(),
  position: z.number().int(),
  lag: z.number().int().openapi({ description: "events in the log not yet folded" }),
  lastError: z.string().nullable(),
}).openapi("ProjectionLag");

const Ready = z.object({
  status: z.literal("ready"),
  database: z.enum(["postgres", "pglite"]),
  migration: z.number().int(),
  projections: z.array(ProjectionLag),
}).openapi("Ready");

const ProblemTypeDoc = z.object({
  type: z.string(),
  title: z.string(),
  status: z.number().int(),
}).openapi("ProblemType");

/** Where to start, liveness, readiness and the problem-type catalogue. No auth, no PHI. */
export const system = new OpenAPIHono<AppEnv>()
  .openapi(
    createRoute({
      method: "get",
      path: "/",
      tags: ["system"],
      summary: "Where to start: links to the API documentation",
      responses: {
        200: { description: "links", content: { "application/json": { schema: Index } } },
      },
    }),
    (c) =>
      c.json({
        service: "chartlog" as const,
        docs: "/docs" as const,
        openapi: "/openapi.json" as const,
        health: "/health" as const,
        ready: "/ready" as const,
      }, 200),
  )
  .openapi(
    createRoute({
      method: "get",
      path: "/health",
      tags: ["system"],
      summary: "Liveness: the process is up",
      responses: {
        200: { description: "alive", content: { "application/json": { schema: Health } } },
      },
    }),
    (c) => c.json({ status: "ok" as const }, 200),
  )
  .openapi(
    createRoute({
      method: "get",
      path: "/ready",
      tags: ["system"],
      summary: "Readiness: database reachable and migrations applied",
      description: "Also reports each projection's checkpoint and lag behind the log.",
      responses: {
        200: { description: "ready", content: { "application/json": { schema: Ready } } },
        ...problemResponses("unavailable"),
      },
    }),
    async (c) => {
      const runtime = c.var.deps.runtime();
      try {
        const migration = await currentMigration(runtime.db);
        if (migration < latestMigration) {
          throw new UnavailableError(`migrations pending: at ${migration} of ${latestMigration}`);
        }
        const projections = await projectionStatus(runtime.store, runtime.projections);
        return c.json({
          status: "ready" as const,
          database: runtime.db.kind,
          migration,
          projections: projections.map(({ head: _head, ...p }) => p),
        }, 200);
      } catch (err) {
        if (err instanceof UnavailableError) throw err;
        throw new UnavailableError("database unreachable");
      }
    },
  )
  .openapi(
    createRoute({
      method: "get",
      path: "/problems/{slug}",
      tags: ["system"],
      summary: "Describes a problem type used in error responses",
      request: { params: z.object({ slug: z.string().max(64) }) },
      responses: {
        200: {
          description: "the problem type",
          content: { "application/json": { schema: ProblemTypeDoc } },
        },
        ...problemResponses("not-found"),
      },
    }),
    (c) => {
      const slug = c.req.valid("param").slug as ProblemSlug;
      const p = Object.hasOwn(PROBLEMS, slug) ? PROBLEMS[slug] : undefined;
      if (!p) throw new NotFoundError("no such problem type");
      return c.json({ type: `/problems/${slug}`, title: p.title, status: p.status }, 200);
    },
  );
