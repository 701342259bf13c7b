import { createRoute, OpenAPIHono, z } from "@hono/zod-openapi";
import type { Context } from "hono";
import { BREAK_GLASS_OUTCOMES } from "../../events/access.ts";
import { listBreakGlass, reviewBreakGlass, useBreakGlass } from "../clinical/break_glass.ts";
import { auditRead } from "../clinical/patients.ts";
import { NOTE_MAX, REASON_MAX, REASON_MIN } from "../domain/break_glass.ts";
import { authenticate, authorize, requestMetadata } from "./auth_middleware.ts";
import type { AppEnv } from "./env.ts";
import { livePatient, patientInPath } from "./patient_scope.ts";
import { problemResponses } from "./problem.ts";
import { bearer, json } from "./route_kit.ts";

const UseBody = z.strictObject({
  reason: z.string().trim().min(REASON_MIN).max(REASON_MAX).openapi({
    description: "why the record is needed now (PHI: sealed with the patient's key)",
  }),
}).openapi("BreakGlassRequest");

const Used = z.object({
  id: z.uuid(),
  grantId: z.uuid(),
  expiresAt: z.string().openapi({ description: "one hour from now" }),
}).openapi("BreakGlassUsed");

const ReviewBody = z.strictObject({
  outcome: z.enum(BREAK_GLASS_OUTCOMES),
  note: z.string().trim().min(1).max(NOTE_MAX),
}).openapi("BreakGlassReviewRequest");

const BreakGlassSchema = z.object({
  id: z.uuid(),
  patientId: z.uuid(),
  practitioner: z.object({ id: z.uuid(), name: z.string().nullable() }),
  grantId: z.uuid(),
  usedAt: z.string(),
  expiresAt: z.string(),
  reason: z.string().nullable().openapi({ description: "null once the patient is erased" }),
  review: z.object({
    outcome: z.enum(BREAK_GLASS_OUTCOMES),
    note: z.string().nullable(),
    reviewedAt: z.string(),
    reviewedBy: z.string().nullable(),
  }).nullable(),
}).openapi("BreakGlass");

const now = (c: Context<AppEnv>) => c.var.deps.runtime().sessions.now();

/** Emergency access to a record (mounted under `/v1/patients`). */
export const patientBreakGlass = new OpenAPIHono<AppEnv>()
  .openapi(
    createRoute({
      method: "post",
      path: "/{id}/break-glass",
      tags: ["break-glass"],
      summary: "Open emergency access to a patient's record for one hour",
      description: "A practitioner, without any relation to the patient: a reason of " +
        `${REASON_MIN} to ${REASON_MAX} characters opens a one-hour grant (BreakGlassUsed + ` +
        "AccessGranted), which auditors review afterwards.",
      security: bearer,
      middleware: [
        authenticate(),
        authorize("breakglass.use"),
        livePatient(patientInPath),
      ] as const,
      request: {
        params: z.object({ id: z.uuid() }),
        body: { required: true, content: json(UseBody) },
      },
      responses: {
        201: { description: "access open until expiresAt", content: json(Used) },
        ...problemResponses(
          "unauthorized",
          "forbidden",
          "not-found",
          "erased",
          "validation",
          "unavailable",
        ),
      },
    }),
    async (c) => {
      const used = await useBreakGlass(
        c.var.deps.runtime().store,
        {
          patientId: c.req.valid("param").id,
          practitionerId: c.get("actor")!.userId,
          reason: c.req.valid("json").reason,
        },
        now(c),
        requestMetadata(c),
      );
      c.header("Cache-Control", "no-store");
      return c.json(used, 201);
    },
  );

/** Review of break-glass uses (mounted under `/v1/audit/break-glass`). */
export const breakGlassAudit = new OpenAPIHono<AppEnv>()
  .openapi(
    createRoute({
      method: "get",
      path: "/",
      tags: ["break-glass"],
      summary: "Break-glass uses with their reasons and review state (audited)",
      description: "Newest first; `reviewed` filters by review state. The reasons are PHI: " +
        "the read is an event (`BreakGlassViewed`).",
      security: bearer,
      middleware: [authenticate(), authorize("breakglass.list")] as const,
      request: {
        query: z.object({
          reviewed: z.enum(["true", "false"]).optional(),
          limit: z.coerce.number().int().min(1).max(100).default(20),
          cursor: z.string().max(1000).optional(),
        }),
      },
      responses: {
        200: {
          description: "a page",
          content: json(z.object({
            items: z.array(BreakGlassSchema),
            nextCursor: z.string().nullable(),
            total: z.number().int(),
          })),
        },
        ...problemResponses("unauthorized", "forbidden", "validation", "unavailable"),
      },
    }),
    async (c) => {
      const q = c.req.valid("query");
      const runtime = c.var.deps.runtime();
      const result = await listBreakGlass(runtime.store, {
        limit: q.limit,
        ...(q.cursor ? { cursor: q.cursor } : {}),
        ...(q.reviewed ? { reviewed: q.reviewed === "true" } : {}),
      });
      await auditRead(runtime, c.get("actor")!, {
        type: "BreakGlassViewed",
        data: {
          patientIds: [...new Set(result.items.map((b) => b.patientId))],
          breakGlassIds: result.items.map((b) => b.id),
        },
      }, requestMetadata(c));
      c.header("Cache-Control", "no-store");
      return c.json(result, 200);
    },
  )
  .openapi(
    createRoute({
      method: "post",
      path: "/{id}/review",
      tags: ["break-glass"],
      summary: "Review a break-glass use, once",
      description: "Appends BreakGlassReviewed (the note is sealed as the patient's PHI). " +
        "A use is reviewed once: a second review is a 409.",
      security: bearer,
      middleware: [authenticate(), authorize("breakglass.review")] as const,
      request: {
        params: z.object({ id: z.uuid() }),
        body: { required: true, content: json(ReviewBody) },
      },
      responses: {
        204: { description: "reviewed" },
        ...problemResponses(
          "unauthorized",
          "forbidden",
          "not-found",
          "validation",
          "conflict",
          "unavailable",
        ),
      },
    }),
    async (c) => {
      await reviewBreakGlass(
        c.var.deps.runtime().store,
        c.req.valid("param").id,
        c.req.valid("json"),
        requestMetadata(c),
      );
      return c.body(null, 204);
    },
  );
