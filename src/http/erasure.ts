import { createRoute, OpenAPIHono, z } from "@hono/zod-openapi";
import { erasePatient } from "../clinical/erasure.ts";
import { authenticate, authorize, requestMetadata } from "./auth_middleware.ts";
import type { AppEnv } from "./env.ts";
import { problemResponses } from "./problem.ts";
import { bearer, json } from "./route_kit.ts";

const IdParam = z.object({ id: z.uuid() });

/** The reason is kept, readable, with the act: it must not name the patient. */
export const ErasureBody = z.strictObject({
  reason: z.string().trim().min(1).max(500).openapi({
    description: "Why the record is erased (1–500 characters), e.g. the request's reference. " +
      "It stays readable in the log: do not name the patient in it.",
    example: "erasure request ER-2026-0042, legal review done",
  }),
});

export const ErasureSummarySchema = z.object({
  patientId: z.uuid(),
  erasedAt: z.string().openapi({ description: "when the patient's key was destroyed" }),
  userIds: z.array(z.uuid()).openapi({
    description: "the patient's own accounts, deactivated and erased with the record",
  }),
  subjectKeys: z.array(z.object({
    subjectId: z.string().openapi({ example: "patient-0b6f…" }),
    sealedEvents: z.number().int().openapi({
      description: "events with fields sealed under this key, unreadable from now on",
    }),
  })).openapi({ description: "the data keys destroyed: the patient's, then each account's" }),
  sealedEvents: z.number().int().openapi({ description: "the sum over the keys" }),
  media: z.object({
    items: z.number().int().openapi({ description: "media records whose files are unreadable" }),
    blobs: z.number().int().openapi({ description: "their files (originals and thumbnails)" }),
    blobsDeleted: z.number().int().openapi({
      description: "of those, no longer in the blob directory",
    }),
  }),
  readModels: z.array(z.object({
    table: z.string(),
    rowsBefore: z.number().int(),
    rowsAfter: z.number().int(),
    rowsDeleted: z.number().int(),
    rowsRewritten: z.number().int(),
  })).openapi({
    description: "per read-model table, its rows about the patient or the accounts before and " +
      "after: deleted, or kept as tombstones with their PHI cleared (rewritten)",
  }),
}).openapi("ErasureSummary");

const DESCRIPTION = "Irreversible, and only where the law allows it (records are kept at least " +
  "six years): destroys the patient's data key and those of the patient's own accounts " +
  "(deactivated first, their sessions ended), so every sealed field in the log and every " +
  "stored file of the patient becomes unreadable; deletes the patient's blobs (already " +
  "unreadable); the read models drop or clear the rows they held. The events stay, so the log " +
  "still verifies and the audit surface still shows who did what and when. Afterwards the " +
  "patient and everything under it answer 410 `/problems/erased`, lists omit it, and so does " +
  "a repeated erasure (which also deletes blobs a crash left behind). Of concurrent erasures " +
  "one answers 200 and the others 410.";

/** The erasure route at `path` (the admin route and its older alias are one operation). */
export const erasureRoute = (path: string, summary: string, extra = "") =>
  createRoute({
    method: "post",
    path,
    tags: ["patients"],
    summary,
    description: DESCRIPTION + extra,
    security: bearer,
    middleware: [authenticate(), authorize("patient.erase")] as const,
    request: {
      params: IdParam,
      body: { required: true, content: json(ErasureBody) },
    },
    responses: {
      200: {
        description: "erased: what was destroyed, deleted and cleared",
        content: json(ErasureSummarySchema),
      },
      ...problemResponses(
        "unauthorized",
        "forbidden",
        "not-found",
        "erased",
        "validation",
        "unavailable",
      ),
    },
  });

/** `POST /v1/admin/patients/:id/erase`: crypto-shredding erasure with a summary (admin). */
export const adminPatients = new OpenAPIHono<AppEnv>().openapi(
  erasureRoute("/{id}/erase", "Erase a patient for good (admin): crypto-shred and report"),
  async (c) => {
    const { id } = c.req.valid("param");
    const { reason } = c.req.valid("json");
    return c.json(await erasePatient(c.var.deps.runtime(), id, reason, requestMetadata(c)), 200);
  },
);
