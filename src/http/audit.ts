import { createRoute, OpenAPIHono, z } from "@hono/zod-openapi";
import type { Context } from "hono";
import { type AuditFilters, EXPORT_FORMATS } from "../../events/audit.ts";
import { catalog } from "../../events/index.ts";
import {
  type AuditPage,
  type AuditQuery,
  queryAuditEvents,
  streamExists,
  userExists,
} from "../clinical/audit_trail.ts";
import { auditRead, loadPatient } from "../clinical/patients.ts";
import {
  CONTENT_TYPES,
  countExport,
  type ExportFilter,
  exportStream,
  exportUpTo,
  FILE_EXTENSIONS,
} from "../audit/export.ts";
import { GoneError, NotFoundError } from "../errors.ts";
import { authenticate, authorize, requestMetadata } from "./auth_middleware.ts";
import type { AppEnv } from "./env.ts";
import { PatientSchema } from "./patients.ts";
import { problemResponses } from "./problem.ts";
import { bearer, contentDisposition, json } from "./route_kit.ts";

const MAX_LIMIT = 500;
const PATIENT_STREAM = /^patient-([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})$/;
const at = z.iso.datetime({ offset: true });

const TypeName = z.string().max(100).refine((t) => catalog.has(t), {
  message: "not an event type",
});

/** Paging and the filters every audit list takes; `type` may repeat. */
const pageQuery = {
  type: z.union([TypeName, z.array(TypeName).max(50)]).optional().openapi({
    description: "event type; repeat for several (any of them)",
  }),
  from: at.optional().openapi({ description: "recorded at or after (ISO 8601)" }),
  to: at.optional().openapi({ description: "recorded before (ISO 8601, exclusive)" }),
  limit: z.coerce.number().int().min(1).max(MAX_LIMIT).default(100),
  cursor: z.string().max(1000).optional(),
};

/** `from` after `to` is a 422 naming `to`. */
const timeWindow = <T extends { from?: string; to?: string }>(q: T, ctx: z.RefinementCtx) => {
  if (q.from && q.to && Date.parse(q.from) > Date.parse(q.to)) {
    ctx.addIssue({ code: "custom", path: ["to"], message: "before `from`" });
  }
};

const EventsQuery = z.object({
  patientId: z.uuid().optional(),
  actorId: z.uuid().optional(),
  streamId: z.string().min(1).max(200).optional(),
  grantId: z.uuid().optional(),
  ...pageQuery,
}).superRefine(timeWindow);

const ActivityQuery = z.object(pageQuery).superRefine(timeWindow);

const ExportQuery = z.object({
  format: z.enum(EXPORT_FORMATS).openapi({
    description: "jsonl: each event as stored; csv: readable columns; fhir: BALP AuditEvents",
  }),
  from: pageQuery.from,
  to: pageQuery.to,
  patientId: z.uuid().optional().openapi({ description: "as for /v1/audit/events" }),
}).superRefine(timeWindow);

const EXPORT_DESCRIPTION = "The log, or the events a filter selects, streamed oldest first " +
  "(constant memory on the server; `X-Export-Events` gives the count). It covers every event " +
  "up to the position the export started at. Audited before the first byte " +
  "(`AuditExported`, with the format, the filters and that position).\n\n" +
  "- `jsonl` (`application/x-ndjson`): one line per event, exactly as stored — sealed " +
  "fields sealed, hashes included — for `deno task audit verify --export FILE`.\n" +
  "- `csv`: a header row, then position, time, type, streamId, actorId, actorRole, subjects " +
  "(the payload's id fields), ip, userAgent, requestId, grantId, onBehalfOf, reason, " +
  "outcome; RFC 4180 quoting, and a cell a spreadsheet would take for a formula " +
  "(= + - @) starts with '.\n" +
  "- `fhir` (`application/fhir+json`): a FHIR R4 Bundle (collection) of AuditEvents " +
  "following IHE BALP: reads as PatientRead, lists and searches as PatientQuery (one " +
  "AuditEvent per patient returned; the query is base64 and never holds search terms), " +
  "writes as Create/Update/Delete, denials with outcome 4. See the README's mapping table.";

const AuditItemSchema = z.object({
  position: z.number().int().openapi({ description: "global position in the log" }),
  time: z.string(),
  type: z.string(),
  streamId: z.string(),
  actor: z.object({
    id: z.string(),
    role: z.string().nullable(),
    name: z.string().nullable().openapi({ description: "from the users read model" }),
  }).nullable(),
  subjects: z.record(z.string(), z.union([z.string(), z.array(z.string())])).openapi({
    description: "the payload's id fields (patientId, grantIds, …); never its PHI fields",
  }),
  ip: z.string().nullable(),
  userAgent: z.string().nullable(),
  requestId: z.string().nullable(),
  grantId: z.string().nullable(),
  onBehalfOf: z.string().nullable(),
  reason: z.string().nullable().openapi({ description: "the metadata reason (audit data)" }),
  outcome: z.enum(["ok", "denied"]).openapi({ description: "denied for AccessDenied" }),
}).openapi("AuditEvent");

const AuditPageSchema = z.object({
  items: z.array(AuditItemSchema),
  nextCursor: z.string().nullable(),
  total: z.number().int(),
}).openapi("AuditEventPage");

const types = (t: string | string[] | undefined) =>
  t === undefined ? undefined : Array.isArray(t) ? t : [t];

const date = (s: string | undefined) => (s === undefined ? undefined : new Date(s));

/** The filters as the audit event records them: only what was given. */
const given = (f: Record<string, unknown>): AuditFilters =>
  Object.fromEntries(Object.entries(f).filter(([, v]) => v !== undefined)) as AuditFilters;

/** Appends the `AuditQueried` of this page to the auditor's access stream. */
const audited = async (
  c: Context<AppEnv>,
  query: "events" | "activity",
  filters: AuditFilters,
  page: AuditPage,
) => {
  await auditRead(c.var.deps.runtime(), c.get("actor")!, {
    type: "AuditQueried",
    data: { query, filters, returned: page.items.length },
  }, requestMetadata(c));
  c.header("Cache-Control", "no-store");
};

const PAGE_PROBLEMS = ["unauthorized", "forbidden", "validation", "unavailable"] as const;

/** The audit trail for auditors (mounted under `/v1/audit`). Every use is itself an event. */
export const auditTrail = new OpenAPIHono<AppEnv>()
  .openapi(
    createRoute({
      method: "get",
      path: "/events",
      tags: ["audit"],
      summary: "Query the log: who did what to which record, when, from where, through what",
      description: "Every filter given must hold. `patientId` finds events naming the patient " +
        "in their payload (`patientId`, or `patientIds` of list reads), the `patient-<id>` " +
        "stream and denials on the record. Oldest first by global position. Audited " +
        "(`AuditQueried`).",
      security: bearer,
      middleware: [authenticate(), authorize("audit.events")] as const,
      request: { query: EventsQuery },
      responses: {
        200: { description: "a page", content: json(AuditPageSchema) },
        ...problemResponses(...PAGE_PROBLEMS),
      },
    }),
    async (c) => {
      const q = c.req.valid("query");
      const filter: AuditQuery = {
        patientId: q.patientId,
        actorId: q.actorId,
        types: types(q.type),
        from: date(q.from),
        to: date(q.to),
        streamId: q.streamId,
        grantId: q.grantId,
      };
      const page = await queryAuditEvents(c.var.deps.runtime().store, "audit-events", filter, {
        limit: q.limit,
        ...(q.cursor ? { cursor: q.cursor } : {}),
      });
      await audited(
        c,
        "events",
        given({
          patientId: q.patientId,
          actorId: q.actorId,
          types: types(q.type),
          from: q.from,
          to: q.to,
          streamId: q.streamId,
          grantId: q.grantId,
          cursor: q.cursor ? true : undefined,
        }),
        page,
      );
      return c.json(page, 200);
    },
  )
  .openapi(
    createRoute({
      method: "get",
      path: "/actors/{id}/activity",
      tags: ["audit"],
      summary: "Everything one user did (events whose metadata names them as the actor)",
      description: "Same items and paging as `/v1/audit/events`. 404 for an id that is no " +
        "user's. Audited (`AuditQueried`).",
      security: bearer,
      middleware: [authenticate(), authorize("audit.activity")] as const,
      request: { params: z.object({ id: z.uuid() }), query: ActivityQuery },
      responses: {
        200: { description: "a page", content: json(AuditPageSchema) },
        ...problemResponses(...PAGE_PROBLEMS, "not-found"),
      },
    }),
    async (c) => {
      const { id } = c.req.valid("param");
      const q = c.req.valid("query");
      const store = c.var.deps.runtime().store;
      if (!(await userExists(store, id))) throw new NotFoundError("no such user");
      const page = await queryAuditEvents(store, "audit-activity", {
        actorId: id,
        types: types(q.type),
        from: date(q.from),
        to: date(q.to),
      }, { limit: q.limit, ...(q.cursor ? { cursor: q.cursor } : {}) });
      await audited(
        c,
        "activity",
        given({
          actorId: id,
          types: types(q.type),
          from: q.from,
          to: q.to,
          cursor: q.cursor ? true : undefined,
        }),
        page,
      );
      return c.json(page, 200);
    },
  )
  .openapi(
    createRoute({
      method: "get",
      path: "/streams/{streamId}",
      tags: ["audit"],
      summary: "A stream's events up to a time and, for a patient, the record as it stood then",
      description: "Events recorded at or before `asOf` (default now), oldest first, paged as " +
        "`/v1/audit/events`. For a `patient-<id>` stream, `state` is the record folded from " +
        "those events with the patient decider (null before it was registered, or once " +
        "erased): a read of PHI, audited as `AuditStreamViewed` naming the patient. Other " +
        "streams answer their events only. 404 for a stream with no events.",
      security: bearer,
      middleware: [authenticate(), authorize("audit.stream")] as const,
      request: {
        params: z.object({ streamId: z.string().min(1).max(200) }),
        query: z.object({
          asOf: at.optional().openapi({ description: "default: now" }),
          limit: pageQuery.limit,
          cursor: pageQuery.cursor,
        }),
      },
      responses: {
        200: {
          description: "the stream up to asOf",
          content: json(
            z.object({
              streamId: z.string(),
              asOf: z.string(),
              state: PatientSchema.nullable().openapi({
                description: "patient streams only: the record at asOf",
              }),
              erased: z.boolean(),
              items: z.array(AuditItemSchema),
              nextCursor: z.string().nullable(),
              total: z.number().int(),
            }).openapi("AuditStream"),
          ),
        },
        ...problemResponses(...PAGE_PROBLEMS, "not-found"),
      },
    }),
    async (c) => {
      const { streamId } = c.req.valid("param");
      const q = c.req.valid("query");
      const runtime = c.var.deps.runtime();
      const store = runtime.store;
      if (!(await streamExists(store, streamId))) throw new NotFoundError("no such stream");
      const asOf = q.asOf ? new Date(q.asOf) : runtime.sessions.now();
      const page = await queryAuditEvents(store, "audit-stream", { streamId, asOf }, {
        limit: q.limit,
        ...(q.cursor ? { cursor: q.cursor } : {}),
      });
      const patientId = PATIENT_STREAM.exec(streamId)?.[1] ?? null;
      let state = null;
      let erased = false;
      if (patientId) {
        try {
          const view = await loadPatient(store, patientId, asOf, asOf);
          if (view) {
            const { version: _v, ...rest } = view;
            state = rest;
          }
        } catch (err) {
          if (!(err instanceof GoneError)) throw err;
          erased = true;
        }
      }
      await auditRead(runtime, c.get("actor")!, {
        type: "AuditStreamViewed",
        data: { streamId, asOf: asOf.toISOString(), patientId, returned: page.items.length },
      }, requestMetadata(c));
      c.header("Cache-Control", "no-store");
      return c.json({ streamId, asOf: asOf.toISOString(), state, erased, ...page }, 200);
    },
  )
  .openapi(
    createRoute({
      method: "get",
      path: "/export",
      tags: ["audit"],
      summary: "Export the log: JSON lines as stored, CSV, or a FHIR BALP Bundle (streamed)",
      description: EXPORT_DESCRIPTION,
      security: bearer,
      middleware: [authenticate(), authorize("audit.export")] as const,
      request: { query: ExportQuery },
      responses: {
        200: {
          description: "the export, streamed",
          headers: z.object({
            "Content-Disposition": contentDisposition(
              'attachment; filename="chartlog-audit-20260101T000000Z.jsonl"',
            ),
            "X-Export-Events": z.string().openapi({ description: "events in the export" }),
          }),
          content: {
            [CONTENT_TYPES.jsonl]: { schema: z.string() },
            "text/csv": { schema: z.string() },
            [CONTENT_TYPES.fhir]: { schema: z.object({ resourceType: z.literal("Bundle") }) },
          },
        },
        ...problemResponses("unauthorized", "forbidden", "validation", "unavailable"),
      },
    }),
    async (c) => {
      const q = c.req.valid("query");
      const runtime = c.var.deps.runtime();
      const store = runtime.store;
      const filter: ExportFilter = {
        ...(q.patientId ? { patientId: q.patientId } : {}),
        ...(q.from ? { from: new Date(q.from) } : {}),
        ...(q.to ? { to: new Date(q.to) } : {}),
      };
      const upTo = await exportUpTo(store);
      const events = await countExport(store, filter, upTo);
      const now = runtime.sessions.now();
      await auditRead(runtime, c.get("actor")!, {
        type: "AuditExported",
        data: {
          format: q.format,
          filters: given({ patientId: q.patientId, from: q.from, to: q.to }),
          upTo,
          events,
        },
      }, requestMetadata(c));
      const body = exportStream(store, q.format, filter, {
        upTo,
        server: new URL(c.req.url).origin,
        now,
      });
      const stamp = now.toISOString().replace(/[-:]|\.\d+/g, "");
      return c.body(body, 200, {
        "Content-Type": CONTENT_TYPES[q.format],
        "Content-Disposition": `attachment; filename="chartlog-audit-${stamp}.${
          FILE_EXTENSIONS[q.format]
        }"`,
        "Cache-Control": "no-store",
        "X-Content-Type-Options": "nosniff",
        "X-Export-Events": String(events),
      });
    },
  );
