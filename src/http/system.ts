import { createRoute, OpenAPIHono, z } from "@hono/zod-openapi";
import { currentMigration, latestMigration } from "../store/migrations.ts";
import { projectionStatus } from "../store/projection_engine.ts";
import type { AppEnv } from "./env.ts";
import { NotFoundError, UnavailableError } from "../errors.ts";
import { problemResponses, PROBLEMS, type ProblemSlug, problemType } from "./problem.ts";

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
  type: z.string().openapi({ example: "/problems/precondition-failed" }),
  title: z.string().openapi({ example: "Precondition failed" }),
  status: z.number().int().openapi({ example: 412 }),
  about: z.string().openapi({ description: "what it means and what to do, in words" }),
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
      summary: "Explains a problem type used in error responses",
      description: "Every `type` in an `application/problem+json` answer is a link here. A " +
        "browser (`Accept: text/html`) gets a short page in words; anything else gets JSON. " +
        "An unknown slug is a 404 problem.",
      request: {
        params: z.object({
          slug: z.string().max(64).openapi({ example: "precondition-failed" }),
        }),
      },
      responses: {
        200: {
          description: "the problem type",
          content: {
            "application/json": { schema: ProblemTypeDoc },
            "text/html": { schema: z.string() },
          },
        },
        ...problemResponses("not-found"),
      },
    }),
    (c) => {
      const slug = c.req.valid("param").slug as ProblemSlug;
      const p = Object.hasOwn(PROBLEMS, slug) ? PROBLEMS[slug] : undefined;
      if (!p) throw new NotFoundError("no such problem type");
      c.header("Vary", "Accept");
      c.header("Cache-Control", "public, max-age=3600");
      if (wantsHtml(c.req.header("accept"))) return c.html(problemPage(slug), 200);
      return c.json(
        { type: problemType(slug), title: p.title, status: p.status, about: p.about },
        200,
      );
    },
  );

/** Whether a client asked for a page rather than data: a browser puts text/html first. */
const wantsHtml = (accept: string | undefined): boolean => {
  const first = accept?.split(",")[0]?.split(";")[0]?.trim().toLowerCase();
  return first === "text/html" || first === "application/xhtml+xml";
};

const escapeHtml = (s: string) => s.replace(/[&<>"']/g, (ch) => `&#${ch.charCodeAt(0)};`);

/** `code` spans of the registry's prose as HTML, everything else escaped. */
const prose = (s: string) =>
  s.split("`").map((part, i) => (i % 2 ? `<code>${escapeHtml(part)}</code>` : escapeHtml(part)))
    .join("");

/** The human page of one problem type: static text from the registry, no script, no style. */
const problemPage = (slug: ProblemSlug): string => {
  const p = PROBLEMS[slug];
  return `<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>${escapeHtml(p.title)} · Chartlog API</title></head>
<body>
<h1>${escapeHtml(p.title)}</h1>
<p>HTTP status <strong>${p.status}</strong> · problem type <code>${
    escapeHtml(problemType(slug))
  }</code></p>
<p>${prose(p.about)}</p>
<p>Answers of this kind are <code>application/problem+json</code> (RFC 9457) with
<code>type</code>, <code>title</code>, <code>status</code>, often a <code>detail</code>, and the
<code>requestId</code> to quote to the operators. They never contain patient data.</p>
<p><a href="/docs">API documentation</a></p>
</body>
</html>
`;
};
