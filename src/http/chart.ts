import { createRoute, OpenAPIHono, z } from "@hono/zod-openapi";
import type { Context } from "hono";
import { CHART_KINDS, type ChartKindName } from "../../events/chart.ts";
import { type Action, chartEntryScope } from "../auth/policy.ts";
import {
  acknowledgeResult,
  amendEntry,
  CHANGE_NAMES,
  changeLabStatus,
  entryFacts,
  entryHistory,
  entryInScope,
  listEntries,
  loadEntry,
  markEnteredInError,
  recordEntry,
} from "../clinical/chart.ts";
import { KINDS, LabResult } from "../clinical/chart_kinds.ts";
import { LAB_MOVES, LAB_STATUSES } from "../domain/chart.ts";
import { encounterPatient } from "../clinical/encounters.ts";
import { auditRead, today } from "../clinical/patients.ts";
import { NotFoundError } from "../errors.ts";
import { authenticate, authorize, deny, requestMetadata } from "./auth_middleware.ts";
import type { AppEnv } from "./env.ts";
import { ifMatchVersion } from "./etag.ts";
import {
  byEncounter,
  byPatient,
  livePatient,
  patientInPath,
  patientOfEncounter,
} from "./patient_scope.ts";
import { problemResponses } from "./problem.ts";
import {
  bearer,
  CREATED_HEADERS,
  IF_NONE_MATCH,
  json,
  NOT_MODIFIED,
  sendVersioned,
  versioned,
  VERSIONED_WRITE_PROBLEMS,
} from "./route_kit.ts";

const Author = z.object({ id: z.uuid(), role: z.string() });

/** The envelope every entry carries; the kind's fields follow it. */
const envelope = {
  id: z.uuid(),
  patientId: z.uuid(),
  kind: z.enum(CHART_KINDS),
  encounterId: z.uuid().nullable(),
  clinicId: z.uuid().nullable(),
  patientEntered: z.boolean().openapi({
    description: "entered by the patient or a full proxy (home medication, a known allergy)",
  }),
  createdBy: Author,
  enteredInError: z.boolean(),
  createdAt: z.string(),
  updatedAt: z.string(),
};

const Acknowledgement = z.object({ by: Author, at: z.string() }).nullable().openapi({
  description: "the ordering practitioner saw the current result (null: not yet, or it " +
    "changed since)",
});

const entrySchema = (kind: ChartKindName) =>
  KINDS[kind].fields.extend({
    ...envelope,
    ...(kind === "lab-tests" ? { acknowledgement: Acknowledgement } : {}),
  }).openapi(`Chart_${kind}`);

const todayOf = (c: Context<AppEnv>) => today(c.var.deps.runtime().sessions.now());

/** The part of the chart the actor reads (a clinic owner: their clinics' entries). */
const scopeOf = (c: Context<AppEnv>) => chartEntryScope(c.get("actor")!);

/** 404 for an entry outside the actor's part of the chart: its existence must not show. */
const requireInScope = async (c: Context<AppEnv>, entryId: string) => {
  if (!(await entryInScope(c.var.deps.runtime().store, entryId, scopeOf(c)))) {
    throw new NotFoundError("no such chart entry");
  }
};

const writeAction = (kind: ChartKindName) => (c: Context<AppEnv>): Action =>
  c.get("actor")?.role === "patient" && KINDS[kind].patientMayEnter
    ? "chart.write_own"
    : "chart.write";

const ListQuery = z.strictObject({
  from: z.iso.date().optional().openapi({ description: "clinical date on or after (UTC)" }),
  to: z.iso.date().optional().openapi({ description: "clinical date on or before (UTC)" }),
  patientEntered: z.enum(["true", "false"]).optional(),
  includeEnteredInError: z.enum(["true", "false"]).default("false"),
  limit: z.coerce.number().int().min(1).max(100).default(50),
  cursor: z.string().max(1000).optional(),
});

const Params = z.object({ id: z.uuid() });
const EntryParams = z.object({ id: z.uuid(), entryId: z.uuid() });

const page = (kind: ChartKindName) =>
  json(z.object({
    items: z.array(entrySchema(kind)),
    nextCursor: z.string().nullable(),
    total: z.number().int(),
  }));

const listQuery = (q: Record<string, string | number | undefined>, kind: ChartKindName) => {
  const extra = Object.fromEntries(
    Object.keys(KINDS[kind].query.shape).map((k) => [k, q[k] as string | undefined]),
  );
  return {
    ...(q.from ? { from: q.from as string } : {}),
    ...(q.to ? { to: q.to as string } : {}),
    ...(q.patientEntered ? { patientEntered: q.patientEntered === "true" } : {}),
    includeEnteredInError: q.includeEnteredInError === "true",
    limit: q.limit as number,
    ...(q.cursor ? { cursor: q.cursor as string } : {}),
    extra,
  };
};

const LIST_DESCRIPTION = "Newest clinical date first, keyset-paged (`cursor` from `nextCursor`), " +
  "with the filtered `total`. Entered-in-error entries are left out unless " +
  "`includeEnteredInError=true`. Audited: one access event naming the ids returned.";

/** One kind's patient routes (mounted under `/v1/patients`). */
const patientKindRoutes = (kind: ChartKindName) => {
  const base = `/{id}/chart/${kind}`;
  const tags = ["chart"];
  const Body = z.record(z.string(), z.unknown()).openapi({
    description: `the fields of ${kind} (see Chart_${kind}), plus optional \`clinicId\` and ` +
      "`encounterId`",
  });
  const ReasonBody = z.strictObject({ reason: z.string().trim().min(1).max(1000) });
  const AmendBody = z.strictObject({
    reason: z.string().trim().min(1).max(1000),
    changes: z.record(z.string(), z.unknown()).openapi({
      description: "the fields replaced; null clears an optional one",
    }),
  });
  /** A patient (or proxy) amends only what was patient-entered. */
  const mayAmend = async (c: Context<AppEnv>, id: string, entryId: string) => {
    const s = await entryFacts(c.var.deps.runtime().store, id, kind, entryId);
    if (c.get("actor")!.role === "patient" && !s?.patientEntered) {
      await deny(c, "chart.amend");
    }
  };
  const author = (c: Context<AppEnv>) => ({
    id: c.get("actor")!.userId,
    role: c.get("actor")!.role,
  });
  return new OpenAPIHono<AppEnv>()
    .openapi(
      createRoute({
        method: "post",
        path: base,
        tags,
        summary: `Record ${kind} in a patient's chart`,
        description: "201 with Location and ETag. A practitioner's entry takes `clinicId` from " +
          "the body (an active clinic where they are an active member; their only one by " +
          "default). Entries by the patient or a full proxy are `patientEntered` and name no " +
          "clinic. A 422 names every bad field.",
        security: bearer,
        middleware: [
          authenticate(),
          authorize(writeAction(kind), byPatient),
          livePatient(patientInPath),
        ] as const,
        request: { params: Params, body: { required: true, content: json(Body) } },
        responses: {
          201: {
            description: "recorded",
            headers: CREATED_HEADERS,
            content: json(entrySchema(kind)),
          },
          ...problemResponses("unauthorized", "forbidden", "not-found", "validation", "erased"),
        },
      }),
      async (c) => {
        const patientId = c.req.valid("param").id;
        const e = await recordEntry(c.var.deps.runtime().store, {
          patientId,
          kind,
          actor: c.get("actor")!,
          body: c.req.valid("json"),
          today: todayOf(c),
        }, requestMetadata(c));
        c.header("Location", `/v1/patients/${patientId}/chart/${kind}/${e.id}`);
        return c.json(versioned(c, e), 201);
      },
    )
    .openapi(
      createRoute({
        method: "get",
        path: base,
        tags,
        summary: `A patient's ${kind} (audited)`,
        description: LIST_DESCRIPTION,
        security: bearer,
        middleware: [
          authenticate(),
          authorize("chart.read", byPatient),
          livePatient(patientInPath),
        ] as const,
        request: { params: Params, query: ListQuery.extend(KINDS[kind].query.shape) },
        responses: {
          200: { description: "a page", content: page(kind) },
          ...problemResponses("unauthorized", "forbidden", "validation", "erased", "unavailable"),
        },
      }),
      async (c) => {
        const patientId = c.req.valid("param").id;
        const runtime = c.var.deps.runtime();
        const q = c.req.valid("query") as Record<string, string | number | undefined>;
        const r = await listEntries(
          runtime.store,
          { patientId },
          kind,
          listQuery(q, kind),
          todayOf(c),
          scopeOf(c),
        );
        await auditRead(runtime, c.get("actor")!, {
          type: "ChartEntriesListed",
          data: { patientId, kind, encounterId: null, entryIds: r.items.map((e) => e.id) },
        }, requestMetadata(c));
        c.header("Cache-Control", "no-store");
        return c.json({ ...r, items: r.items.map(({ version: _v, ...e }) => e) }, 200);
      },
    )
    .openapi(
      createRoute({
        method: "get",
        path: `${base}/{entryId}`,
        tags,
        summary: `Read one of a patient's ${kind} (audited)`,
        security: bearer,
        middleware: [
          authenticate(),
          authorize("chart.read", byPatient),
          livePatient(patientInPath),
        ] as const,
        request: { params: EntryParams, headers: IF_NONE_MATCH },
        responses: {
          200: { description: "the entry (ETag: its version)", content: json(entrySchema(kind)) },
          ...NOT_MODIFIED,
          ...problemResponses("unauthorized", "forbidden", "not-found", "validation", "erased"),
        },
      }),
      async (c) => {
        const { id, entryId } = c.req.valid("param");
        const runtime = c.var.deps.runtime();
        await requireInScope(c, entryId);
        const e = await loadEntry(runtime.store, id, kind, entryId);
        if (!e) throw new NotFoundError("no such chart entry");
        await auditRead(runtime, c.get("actor")!, {
          type: "ChartEntryViewed",
          data: { patientId: id, kind, entryId, history: false },
        }, requestMetadata(c));
        return sendVersioned(c, e);
      },
    )
    .openapi(
      createRoute({
        method: "get",
        path: `${base}/{entryId}/history`,
        tags,
        summary: `Every version of one of a patient's ${kind} (audited)`,
        description: "Oldest first: the change (recorded, amended, entered_in_error; a lab " +
          "test's status_changed and acknowledged), who made " +
          "it in which role, when, why, the fields changed and the content after it.",
        security: bearer,
        middleware: [
          authenticate(),
          authorize("chart.read", byPatient),
          livePatient(patientInPath),
        ] as const,
        request: { params: EntryParams },
        responses: {
          200: {
            description: "the versions",
            content: json(z.object({
              items: z.array(z.object({
                version: z.number().int(),
                change: z.enum(CHANGE_NAMES),
                at: z.string(),
                by: Author,
                reason: z.string().nullable(),
                changes: z.record(z.string(), z.unknown()).nullable(),
                enteredInError: z.boolean(),
                content: z.record(z.string(), z.unknown()).nullable(),
              })),
            })),
          },
          ...problemResponses("unauthorized", "forbidden", "not-found", "validation", "erased"),
        },
      }),
      async (c) => {
        const { id, entryId } = c.req.valid("param");
        const runtime = c.var.deps.runtime();
        await requireInScope(c, entryId);
        const items = await entryHistory(runtime.store, id, kind, entryId);
        await auditRead(runtime, c.get("actor")!, {
          type: "ChartEntryViewed",
          data: { patientId: id, kind, entryId, history: true },
        }, requestMetadata(c));
        c.header("Cache-Control", "no-store");
        return c.json({ items }, 200);
      },
    )
    .openapi(
      createRoute({
        method: "post",
        path: `${base}/{entryId}/amendments`,
        tags,
        summary: `Amend one of a patient's ${kind}`,
        description: "A new version with a reason; nothing is edited in place. `changes` must " +
          "leave a valid entry (422 naming `changes.<field>`). Honours If-Match (412 when " +
          "stale). A patient or full proxy amends only patient-entered entries.",
        security: bearer,
        middleware: [
          authenticate(),
          authorize("chart.amend", byPatient),
          livePatient(patientInPath),
        ] as const,
        request: { params: EntryParams, body: { required: true, content: json(AmendBody) } },
        responses: {
          200: { description: "the entry", content: json(entrySchema(kind)) },
          ...problemResponses(...VERSIONED_WRITE_PROBLEMS),
        },
      }),
      async (c) => {
        const { id, entryId } = c.req.valid("param");
        await mayAmend(c, id, entryId);
        const body = c.req.valid("json");
        const e = await amendEntry(
          c.var.deps.runtime().store,
          {
            patientId: id,
            kind,
            entryId,
            by: author(c),
            reason: body.reason,
            changes: body.changes,
            today: todayOf(c),
          },
          requestMetadata(c),
          ifMatchVersion(c),
        );
        return c.json(versioned(c, e), 200);
      },
    )
    .openapi(
      createRoute({
        method: "post",
        path: `${base}/{entryId}/entered-in-error`,
        tags,
        summary: `Mark one of a patient's ${kind} entered in error`,
        description: "An amendment too: the entry stays in its history and is left out of " +
          "lists unless `includeEnteredInError=true`. Honours If-Match.",
        security: bearer,
        middleware: [
          authenticate(),
          authorize("chart.amend", byPatient),
          livePatient(patientInPath),
        ] as const,
        request: { params: EntryParams, body: { required: true, content: json(ReasonBody) } },
        responses: {
          200: { description: "the entry", content: json(entrySchema(kind)) },
          ...problemResponses(...VERSIONED_WRITE_PROBLEMS),
        },
      }),
      async (c) => {
        const { id, entryId } = c.req.valid("param");
        await mayAmend(c, id, entryId);
        const e = await markEnteredInError(
          c.var.deps.runtime().store,
          {
            patientId: id,
            kind,
            entryId,
            by: author(c),
            reason: c.req.valid("json").reason,
          },
          requestMetadata(c),
          ifMatchVersion(c),
        );
        return c.json(versioned(c, e), 200);
      },
    );
};

const MOVES_TEXT = Object.entries(LAB_MOVES).map(([from, to]) =>
  `${from} → ${to.length ? to.join(" | ") : "(none)"}`
).join("; ");

/** A lab test's own moves: PATCH (status) and acknowledge (mounted under `/v1/patients`). */
const labTestRoutes = () => {
  const base = "/{id}/chart/lab-tests/{entryId}";
  const tags = ["chart"];
  const author = (c: Context<AppEnv>) => ({
    id: c.get("actor")!.userId,
    role: c.get("actor")!.role,
  });
  const PatchBody = z.strictObject({
    status: z.enum(LAB_STATUSES),
    resultText: z.string().trim().min(1).max(20_000).nullable().optional(),
    results: z.array(LabResult).max(200).nullable().optional(),
  });
  return new OpenAPIHono<AppEnv>()
    .openapi(
      createRoute({
        method: "patch",
        path: base,
        tags,
        summary: "Move a lab test's status (with its result)",
        description: `The moves: ${MOVES_TEXT}. Any other (backwards, from an end, to the ` +
          "same status) is 409 `/problems/illegal-transition`. `resultText` and `results` " +
          "given replace the entry's (null clears). A version of its own in the history " +
          "(`status_changed`), not an amendment. Honours If-Match (412 when stale).",
        security: bearer,
        middleware: [
          authenticate(),
          authorize("chart.amend", byPatient),
          livePatient(patientInPath),
        ] as const,
        request: { params: EntryParams, body: { required: true, content: json(PatchBody) } },
        responses: {
          200: { description: "the lab test", content: json(entrySchema("lab-tests")) },
          ...problemResponses(...VERSIONED_WRITE_PROBLEMS, "illegal-transition"),
        },
      }),
      async (c) => {
        const { id, entryId } = c.req.valid("param");
        const s = await entryFacts(c.var.deps.runtime().store, id, "lab-tests", entryId);
        // a lab test is never patient-entered: a patient or proxy moves none
        if (c.get("actor")!.role === "patient" && !s?.patientEntered) {
          await deny(c, "chart.amend");
        }
        const { status, ...results } = c.req.valid("json");
        const e = await changeLabStatus(
          c.var.deps.runtime().store,
          { patientId: id, entryId, by: author(c), status, results, today: todayOf(c) },
          requestMetadata(c),
          ifMatchVersion(c),
        );
        return c.json(versioned(c, e), 200);
      },
    )
    .openapi(
      createRoute({
        method: "post",
        path: `${base}/acknowledge`,
        tags,
        summary: "The ordering practitioner saw a lab test's result",
        description: "Only a completed test (409 otherwise) and only its ordering practitioner " +
          "(`orderedById`; anyone else 403). Idempotent: acknowledging the same result again " +
          "answers 200 and records nothing; a result amended since is unacknowledged again.",
        security: bearer,
        middleware: [
          authenticate(),
          authorize("chart.acknowledge", byPatient),
          livePatient(patientInPath),
        ] as const,
        request: { params: EntryParams },
        responses: {
          200: { description: "the lab test", content: json(entrySchema("lab-tests")) },
          ...problemResponses("unauthorized", "forbidden", "not-found", "conflict", "erased"),
        },
      }),
      async (c) => {
        const { id, entryId } = c.req.valid("param");
        const store = c.var.deps.runtime().store;
        const s = await entryFacts(store, id, "lab-tests", entryId);
        // the state first (a test not completed is 409 to everyone allowed to ask), then who
        if (s && s.status === "current" && s.content?.status === "completed") {
          if (s.content.orderedById !== c.get("actor")!.userId) {
            await deny(c, "chart.acknowledge");
          }
        }
        const e = await acknowledgeResult(
          store,
          { patientId: id, entryId, by: author(c) },
          requestMetadata(c),
        );
        return c.json(versioned(c, e), 200);
      },
    );
};

/** One kind's list by encounter (mounted under `/v1/encounters`). */
const encounterKindRoutes = (kind: ChartKindName) =>
  new OpenAPIHono<AppEnv>().openapi(
    createRoute({
      method: "get",
      path: `/{id}/chart/${kind}`,
      tags: ["chart"],
      summary: `An encounter's ${kind} (audited)`,
      description: LIST_DESCRIPTION,
      security: bearer,
      middleware: [
        authenticate(),
        authorize("chart.read", byEncounter),
        livePatient(patientOfEncounter),
      ] as const,
      request: { params: Params, query: ListQuery.extend(KINDS[kind].query.shape) },
      responses: {
        200: { description: "a page", content: page(kind) },
        ...problemResponses("unauthorized", "forbidden", "not-found", "validation", "erased"),
      },
    }),
    async (c) => {
      const encounterId = c.req.valid("param").id;
      const runtime = c.var.deps.runtime();
      const patientId = await encounterPatient(runtime.store, encounterId);
      if (!patientId) throw new NotFoundError("no such encounter");
      const q = c.req.valid("query") as Record<string, string | number | undefined>;
      const r = await listEntries(
        runtime.store,
        { encounterId },
        kind,
        listQuery(q, kind),
        todayOf(c),
        scopeOf(c),
      );
      await auditRead(runtime, c.get("actor")!, {
        type: "ChartEntriesListed",
        data: { patientId, kind, encounterId, entryIds: r.items.map((e) => e.id) },
      }, requestMetadata(c));
      c.header("Cache-Control", "no-store");
      return c.json({ ...r, items: r.items.map(({ version: _v, ...e }) => e) }, 200);
    },
  );

/** The chart of every kind, under `/v1/patients`. */
export const patientChart = new OpenAPIHono<AppEnv>();
/** Encounters' chart lists, under `/v1/encounters`. */
export const encounterChart = new OpenAPIHono<AppEnv>();
patientChart.route("/", labTestRoutes());
for (const kind of CHART_KINDS) {
  patientChart.route("/", patientKindRoutes(kind));
  encounterChart.route("/", encounterKindRoutes(kind));
}
