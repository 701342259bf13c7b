import { createRoute, OpenAPIHono, z } from "@hono/zod-openapi";
import { auditRead } from "../clinical/patients.ts";
import {
  disclosures,
  disclosuresCsv,
  patientInLog,
  PURPOSES,
  sixYearsBefore,
} from "../clinical/disclosures.ts";
import { NotFoundError } from "../errors.ts";
import { authenticate, authorize, requestMetadata } from "./auth_middleware.ts";
import type { AppEnv } from "./env.ts";
import { problemResponses } from "./problem.ts";
import { bearer, contentDisposition, json } from "./route_kit.ts";

const at = z.iso.datetime({ offset: true });

const DisclosuresQuery = z.object({
  from: at.optional().openapi({ description: "recorded at or after (default: six years ago)" }),
  to: at.optional().openapi({ description: "recorded before (exclusive; default: now)" }),
  excludeTreatment: z.enum(["true", "false"]).optional().openapi({
    description: "true: the 45 CFR 164.528 accounting — treatment, payment and operations " +
      "(`treatment`, `operations`) left out",
  }),
  format: z.enum(["json", "csv"]).default("json").openapi({
    description: "csv: every group at once (no paging), `text/csv`",
  }),
  limit: z.coerce.number().int().min(1).max(500).default(100),
  cursor: z.string().max(1000).optional(),
}).superRefine((q, ctx) => {
  if (q.from && q.to && Date.parse(q.from) > Date.parse(q.to)) {
    ctx.addIssue({ code: "custom", path: ["to"], message: "before `from`" });
  }
});

const GroupSchema = z.object({
  actor: z.object({
    id: z.string().nullable().openapi({ description: "null: the system (no actor)" }),
    name: z.string().nullable().openapi({
      description: "from the users read model; null for an erased user or a non-user actor",
    }),
    erased: z.boolean().openapi({ description: "the user was erased (the name is gone)" }),
  }),
  role: z.string().nullable(),
  clinic: z.object({ id: z.string(), name: z.string().nullable() }).optional().openapi({
    description: "when the grant was made to a clinic",
  }),
  purpose: z.enum(PURPOSES),
  grantId: z.string().nullable().openapi({
    description: "the grant (or family proxy relation) the access stood on",
  }),
  first: z.string(),
  last: z.string(),
  count: z.number().int(),
  what: z.array(z.string()).openapi({
    description: "what was read or written, briefly (e.g. `demographics`, `media download`); " +
      "never PHI values",
  }),
}).openapi("DisclosureGroup");

/** `GET /v1/audit/patients/:id/disclosures` (mounted under `/v1/audit`). */
export const auditDisclosures = new OpenAPIHono<AppEnv>().openapi(
  createRoute({
    method: "get",
    path: "/patients/{id}/disclosures",
    tags: ["audit"],
    summary: "Accounting of disclosures: who accessed this patient's record, when and why",
    description: "Every access to the patient's PHI by anyone but the patient's own accounts, " +
      "from the log alone, six years back by default: audited reads naming the patient (list " +
      "reads included), audit-surface uses naming them, break-glass openings and writes of " +
      "their record; never denials. Grouped by (actor, role, purpose, grant), ordered by first " +
      "use. `purpose`: `emergency` (through a break-glass grant), `patient_authorized` (through " +
      "a grant or as a family proxy), `audit` (auditors, the audit surface), `treatment` " +
      "(practitioners through a care relation), `operations` (admins, operations staff, the " +
      "system). An erased patient's report still works. 404 for an id that was never a " +
      "patient. Audited (`AuditQueried`, query `disclosures`).",
    security: bearer,
    middleware: [authenticate(), authorize("audit.disclosures")] as const,
    request: { params: z.object({ id: z.uuid() }), query: DisclosuresQuery },
    responses: {
      200: {
        description: "a page of groups (JSON), or every group (CSV)",
        headers: z.object({
          "Content-Disposition": contentDisposition(
            'attachment; filename="disclosures-2f1c9b8e-4a3d-4f6e-9b7a-1c2d3e4f5a6b.csv"',
          ).optional().openapi({ description: "CSV only: an attachment with a file name" }),
        }),
        content: {
          ...json(
            z.object({ items: z.array(GroupSchema), nextCursor: z.string().nullable() })
              .openapi("DisclosurePage"),
          ),
          "text/csv": {
            schema: z.string().openapi({
              description: "actorId,actorName,role,clinicId,clinicName,purpose,grantId,first," +
                "last,count,what",
            }),
          },
        },
      },
      ...problemResponses("unauthorized", "forbidden", "validation", "not-found", "unavailable"),
    },
  }),
  async (c) => {
    const { id } = c.req.valid("param");
    const q = c.req.valid("query");
    const runtime = c.var.deps.runtime();
    const store = runtime.store;
    if (!(await patientInLog(store, id))) throw new NotFoundError("no such patient");
    const now = runtime.sessions.now();
    const csv = q.format === "csv";
    const page = await disclosures(store, {
      patientId: id,
      from: q.from ? new Date(q.from) : sixYearsBefore(now),
      to: q.to ? new Date(q.to) : new Date(now.getTime() + 1),
      excludeTreatment: q.excludeTreatment === "true",
    }, csv ? { limit: null } : { limit: q.limit, ...(q.cursor ? { cursor: q.cursor } : {}) });
    // fail-closed: no answer unless the query is on record
    await auditRead(runtime, c.get("actor")!, {
      type: "AuditQueried",
      data: {
        query: "disclosures",
        filters: {
          patientId: id,
          ...(q.from ? { from: q.from } : {}),
          ...(q.to ? { to: q.to } : {}),
          ...(q.cursor && !csv ? { cursor: true } : {}),
        },
        returned: page.items.length,
      },
    }, requestMetadata(c));
    c.header("Cache-Control", "no-store");
    if (csv) {
      return c.body(disclosuresCsv(page.items), 200, {
        "content-type": "text/csv; charset=utf-8",
        "content-disposition": `attachment; filename="disclosures-${id}.csv"`,
      }) as never;
    }
    return c.json(page, 200);
  },
);
