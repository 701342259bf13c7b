import { createRoute, OpenAPIHono, z } from "@hono/zod-openapi";
import type { Context } from "hono";
import { GENDERS } from "../../events/patient.ts";
import { can, listFilter } from "../auth/policy.ts";
import { changeCareTeam, loadCareTeam } from "../clinical/care_team.ts";
import {
  auditRead,
  deletePatient,
  loadPatient,
  openPatient,
  patchPatient,
  patientStream,
  registerPatient,
  restorePatient,
  updatePatient,
} from "../clinical/patients.ts";
import { erasePatient } from "../clinical/erasure.ts";
import { erasureRoute } from "./erasure.ts";
import { ORDERINGS, searchPatients } from "../clinical/patient_search.ts";
import { patientHistory } from "../clinical/patient_history.ts";
import { visiblePatient } from "../clinical/visibility.ts";
import { normalize, PatientInput } from "../domain/patient.ts";
import { NotFoundError } from "../errors.ts";
import { allowed, authenticate, authorize, deny, requestMetadata } from "./auth_middleware.ts";
import type { AppEnv } from "./env.ts";
import { ifMatchVersion } from "./etag.ts";
import {
  byPatient as patientResource,
  byPatientRecord,
  livePatient,
  patientInPath,
  prefetchedRecord,
  relationRule,
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

const IdParam = z.object({ id: z.uuid() });

const Address = z.object({
  line1: z.string(),
  line2: z.string().nullable(),
  city: z.string(),
  state: z.string(),
  zip: z.string(),
});
export const PatientSchema = z.object({
  id: z.uuid(),
  mrn: z.string(),
  firstName: z.string(),
  middleName: z.string().nullable(),
  lastName: z.string(),
  fullName: z.string(),
  dateOfBirth: z.string(),
  age: z.number().int(),
  gender: z.enum(GENDERS),
  phone: z.string().nullable(),
  email: z.string().nullable(),
  address: Address.nullable(),
  emergencyContact: z.object({ name: z.string(), phone: z.string(), relation: z.string() })
    .nullable(),
  insurance: z.object({
    payer: z.string(),
    memberId: z.string(),
    groupNumber: z.string().nullable(),
  })
    .nullable(),
  deleted: z.boolean(),
  createdAt: z.string(),
  updatedAt: z.string(),
}).openapi("Patient");

const PatientSummary = z.object({
  id: z.uuid(),
  mrn: z.string(),
  firstName: z.string(),
  lastName: z.string(),
  dateOfBirth: z.string(),
  gender: z.string(),
  city: z.string().nullable(),
  state: z.string().nullable(),
  deleted: z.boolean(),
}).openapi("PatientSummary");

const HistoryItem = z.object({
  version: z.number().int(),
  type: z.string(),
  recordedAt: z.string(),
  actorId: z.string().nullable(),
  actorRole: z.string().nullable(),
  actorName: z.string().nullable(),
  ip: z.string().nullable(),
  userAgent: z.string().nullable(),
  requestId: z.string().nullable(),
  data: z.record(z.string(), z.unknown()),
}).openapi("PatientHistoryItem");

const CareTeamSchema = z.object({
  items: z.array(z.object({
    practitionerId: z.uuid(),
    name: z.string().nullable(),
    addedAt: z.string(),
  })),
}).openapi("CareTeam");

const PatientInputDoc = PatientInput;

/** A made-up patient for the documentation: no real person. */
const PATIENT_EXAMPLE = {
  mrn: "MRN-000123",
  firstName: "Jordan",
  lastName: "Example",
  dateOfBirth: "1984-02-29",
  gender: "F",
  phone: "+15555550123",
  address: { line1: "1 Example Street", city: "Springfield", state: "CA", zip: "90000" },
};
const PatientPatchDoc = PatientInput.partial();

const now = (c: Context<AppEnv>) => c.var.deps.runtime().sessions.now();

/** The record, 404 when soft-deleted unless the actor may see deleted ones. */
const visible = (c: Context<AppEnv>, id: string, asOf?: Date) =>
  visiblePatient(c.var.deps.runtime().store, c.get("actor")!, id, now(c), asOf);

/** The team as an answer, audited as a read (see the GET route for why). */
const careTeamAnswer = async (c: Context<AppEnv>, patientId: string) => {
  const items = await loadCareTeam(c.var.deps.runtime().store, patientId);
  await auditRead(c.var.deps.runtime(), c.get("actor")!, {
    type: "CareTeamViewed",
    data: { patientId, practitionerIds: items.map((m) => m.practitionerId) },
  }, requestMetadata(c));
  c.header("Cache-Control", "no-store");
  return { items };
};

/**
 * An answer that carries the whole record is a read of it (GET, restore, PUT,
 * PATCH): one PatientViewed, and no answer if it cannot be written (503).
 */
const auditAnswer = (c: Context<AppEnv>, patientId: string) =>
  auditRead(c.var.deps.runtime(), c.get("actor")!, {
    type: "PatientViewed",
    data: { patientId, asOf: null },
  }, requestMetadata(c));

/** Patients: registration, search, reads (each one audited), edits, soft delete, care team. */
export const patients = new OpenAPIHono<AppEnv>()
  .openapi(
    createRoute({
      method: "post",
      path: "/",
      tags: ["patients"],
      summary: "Register a patient",
      description:
        "The MRN is unique: of two concurrent registrations with one MRN one gets 201, " +
        "the other 409.",
      security: bearer,
      middleware: [authenticate(), authorize("patient.create")] as const,
      request: {
        body: {
          required: true,
          content: {
            "application/json": { schema: PatientInputDoc, example: PATIENT_EXAMPLE },
          },
        },
      },
      responses: {
        201: {
          description: "registered",
          headers: CREATED_HEADERS,
          content: json(PatientSchema),
        },
        ...problemResponses("unauthorized", "forbidden", "validation", "conflict"),
      },
    }),
    async (c) => {
      const { store, indexKey } = c.var.deps.runtime();
      const p = await registerPatient(
        store,
        indexKey,
        c.req.valid("json"),
        requestMetadata(c),
        now(c),
      );
      c.header("Location", `/v1/patients/${p.id}`);
      return c.json(versioned(c, p), 201);
    },
  )
  .openapi(
    createRoute({
      method: "get",
      path: "/",
      tags: ["patients"],
      summary: "Search and list patients",
      description:
        "`search` is a case-insensitive prefix of first name, last name, MRN or email. " +
        "Roles that read only related patients (practitioners) see exactly the patients they " +
        "may read: care team, or an encounter under the relation rule. The ids returned are " +
        "audited (`PatientsSearched`), never the query text.",
      security: bearer,
      middleware: [authenticate(), authorize("patient.list")] as const,
      request: {
        query: z.object({
          search: z.string().trim().min(1).max(100).optional(),
          gender: z.enum(GENDERS).optional(),
          city: z.string().max(100).optional(),
          state: z.string().regex(/^[A-Za-z]{2}$/).optional(),
          ordering: z.enum(ORDERINGS).default("last_name"),
          limit: z.coerce.number().int().min(1).max(100).default(20),
          cursor: z.string().max(1000).optional(),
          include_deleted: z.enum(["true", "false"]).default("false"),
        }),
      },
      responses: {
        200: {
          description: "a page",
          content: json(z.object({
            items: z.array(PatientSummary),
            nextCursor: z.string().nullable(),
            total: z.number().int(),
          })),
        },
        ...problemResponses("unauthorized", "forbidden", "validation", "unavailable"),
      },
    }),
    async (c) => {
      const q = c.req.valid("query");
      const actor = c.get("actor")!;
      const includeDeleted = q.include_deleted === "true";
      if (includeDeleted && !(await allowed(c, "patient.see_deleted"))) {
        await deny(c, "patient.see_deleted");
      }
      const { store } = c.var.deps.runtime();
      const page = await searchPatients(store, {
        ...q,
        includeDeleted,
        scope: listFilter(actor, relationRule(c)),
      });
      await auditRead(c.var.deps.runtime(), actor, {
        type: "PatientsSearched",
        data: { patientIds: page.items.map((p) => p.id), total: page.total },
      }, requestMetadata(c));
      c.header("Cache-Control", "no-store");
      return c.json(page, 200);
    },
  )
  .openapi(
    createRoute({
      method: "get",
      path: "/{id}",
      tags: ["patients"],
      summary: "Read a patient (audited); `asOf` folds the record as it stood then",
      description: "With `asOf` (needs `patient.read_as_of` as well as `patient.read`: admins) " +
        "the record is folded from the log up to that instant.",
      security: bearer,
      middleware: [authenticate(), authorize("patient.read", byPatientRecord)] as const,
      request: {
        params: IdParam,
        query: z.object({ asOf: z.iso.datetime({ offset: true }).optional() }),
        headers: IF_NONE_MATCH,
      },
      responses: {
        200: { description: "the patient", content: json(PatientSchema) },
        ...NOT_MODIFIED,
        ...problemResponses("unauthorized", "forbidden", "not-found", "validation", "unavailable"),
      },
    }),
    async (c) => {
      const { id } = c.req.valid("param");
      const { asOf } = c.req.valid("query");
      // an as-of read of now is a current read: it needs both actions
      if (asOf && !(await allowed(c, "patient.read_as_of"))) await deny(c, "patient.read_as_of");
      const audit = () =>
        auditRead(c.var.deps.runtime(), c.get("actor")!, {
          type: "PatientViewed",
          data: { patientId: id, asOf: asOf ? new Date(asOf).toISOString() : null },
        }, requestMetadata(c));
      // The policy check read the patients row and, in the same query, the
      // sealed stream (byPatientRecord). When the row shows a record this
      // actor may see, the access event is written while the record is
      // unsealed and folded: the answer waits for the slower of the two, not
      // both. Still fail-closed: without the event there is no answer (503).
      // Else (no such record, deleted, an as-of read) read first, then audit:
      // a 404 appends nothing.
      const pre = asOf ? undefined : await prefetchedRecord(c);
      const row = pre?.row;
      if (
        pre && row && !row.erased && (!row.deleted || can(c.get("actor")!, "patient.see_deleted"))
      ) {
        const store = c.var.deps.runtime().store;
        const open = async () => {
          const p = await openPatient(store, pre.events, now(c), pre.key);
          if (!p || (p.deleted && !can(c.get("actor")!, "patient.see_deleted"))) {
            throw new NotFoundError("no such patient");
          }
          return p;
        };
        const [record, audited] = await Promise.allSettled([open(), audit()]);
        if (audited.status === "rejected") throw audited.reason;
        if (record.status === "rejected") throw record.reason;
        return sendVersioned(c, record.value);
      }
      const p = await visible(c, id, asOf ? new Date(asOf) : undefined);
      await audit();
      return sendVersioned(c, p);
    },
  )
  .openapi(
    createRoute({
      method: "put",
      path: "/{id}",
      tags: ["patients"],
      summary: "Replace a patient's demographics (If-Match honoured)",
      security: bearer,
      middleware: [authenticate(), authorize("patient.update", patientResource)] as const,
      request: { params: IdParam, body: { required: true, content: json(PatientInputDoc) } },
      responses: {
        200: { description: "the patient (audited as a read)", content: json(PatientSchema) },
        ...problemResponses(...VERSIONED_WRITE_PROBLEMS, "unavailable"),
      },
    }),
    async (c) => {
      const { id } = c.req.valid("param");
      await visible(c, id);
      const p = await updatePatient(
        c.var.deps.runtime().store,
        id,
        normalize(c.req.valid("json")),
        requestMetadata(c),
        now(c),
        ifMatchVersion(c),
      );
      await auditAnswer(c, id);
      return c.json(versioned(c, p), 200);
    },
  )
  .openapi(
    createRoute({
      method: "patch",
      path: "/{id}",
      tags: ["patients"],
      summary: "Change some of a patient's demographics (If-Match honoured)",
      security: bearer,
      middleware: [authenticate(), authorize("patient.update", patientResource)] as const,
      request: { params: IdParam, body: { required: true, content: json(PatientPatchDoc) } },
      responses: {
        200: { description: "the patient (audited as a read)", content: json(PatientSchema) },
        ...problemResponses(...VERSIONED_WRITE_PROBLEMS, "unavailable"),
      },
    }),
    async (c) => {
      const { id } = c.req.valid("param");
      const body = c.req.valid("json");
      await visible(c, id);
      const p = await patchPatient(
        c.var.deps.runtime().store,
        id,
        body,
        requestMetadata(c),
        now(c),
        ifMatchVersion(c),
      );
      await auditAnswer(c, id);
      return c.json(versioned(c, p), 200);
    },
  )
  .openapi(
    createRoute({
      method: "delete",
      path: "/{id}",
      tags: ["patients"],
      summary: "Soft-delete a patient; `reason` (JSON body or query) is required",
      security: bearer,
      middleware: [authenticate(), authorize("patient.delete", patientResource)] as const,
      request: {
        params: IdParam,
        query: z.object({ reason: z.string().max(1000).optional() }),
        body: {
          required: false,
          content: json(z.strictObject({ reason: z.string().max(1000) })),
        },
      },
      responses: {
        204: { description: "deleted (the record stays in the log)" },
        ...problemResponses(...VERSIONED_WRITE_PROBLEMS),
      },
    }),
    async (c) => {
      const { id } = c.req.valid("param");
      // the decider refuses a blank reason (422)
      const reason = c.req.valid("json")?.reason ?? c.req.valid("query").reason ?? "";
      await visible(c, id);
      await deletePatient(
        c.var.deps.runtime().store,
        id,
        reason,
        requestMetadata(c),
        ifMatchVersion(c),
      );
      return c.body(null, 204);
    },
  )
  .openapi(
    createRoute({
      method: "post",
      path: "/{id}/restore",
      tags: ["patients"],
      summary: "Restore a soft-deleted patient (admin)",
      security: bearer,
      middleware: [
        authenticate(),
        authorize("patient.restore"),
        livePatient(patientInPath),
      ] as const,
      request: { params: IdParam },
      responses: {
        200: { description: "restored (audited as a read)", content: json(PatientSchema) },
        ...problemResponses("unauthorized", "forbidden", "not-found", "conflict", "unavailable"),
      },
    }),
    async (c) => {
      const { id } = c.req.valid("param");
      const runtime = c.var.deps.runtime();
      await restorePatient(runtime.store, id, requestMetadata(c));
      const p = (await loadPatient(runtime.store, id, now(c)))!;
      await auditAnswer(c, id);
      return c.json(versioned(c, p), 200);
    },
  )
  .openapi(
    erasureRoute(
      "/{id}/erasure",
      "Erase a patient for good (admin): the same operation as POST /v1/admin/patients/{id}/erase",
      " This path is the older spelling of `POST /v1/admin/patients/{id}/erase`: the same " +
        "operation, body and answer.",
    ),
    async (c) => {
      const { id } = c.req.valid("param");
      const { reason } = c.req.valid("json");
      return c.json(
        await erasePatient(c.var.deps.runtime(), id, reason, requestMetadata(c)),
        200,
      );
    },
  )
  .openapi(
    createRoute({
      method: "get",
      path: "/{id}/history",
      tags: ["patients"],
      summary: "The record's events with who, when and from where (audited)",
      description: "Each item names the actor (id, role, name) and the request it came from " +
        "(IP, user agent, request id). Only roles with `patient.history` (admin, clinical_ops) " +
        "read it, and each of them sees all of it.",
      security: bearer,
      middleware: [
        authenticate(),
        authorize("patient.history", patientResource),
        livePatient(patientInPath),
      ] as const,
      request: { params: IdParam },
      responses: {
        200: {
          description: "events, oldest first",
          content: json(z.object({ items: z.array(HistoryItem) })),
        },
        ...problemResponses("unauthorized", "forbidden", "not-found", "unavailable"),
      },
    }),
    async (c) => {
      const { id } = c.req.valid("param");
      const items = await patientHistory(c.var.deps.runtime().store, id);
      await auditRead(c.var.deps.runtime(), c.get("actor")!, {
        type: "PatientHistoryViewed",
        data: { patientId: id },
      }, requestMetadata(c));
      c.header("Cache-Control", "no-store");
      return c.json({ items }, 200);
    },
  )
  .openapi(
    createRoute({
      method: "get",
      path: "/{id}/care-team",
      tags: ["patients"],
      summary: "The patient's care team (audited)",
      description: "Who may read the patient may read its team. Audited as a read " +
        "(`CareTeamViewed`): which practitioners treat a patient is information about their care.",
      security: bearer,
      middleware: [
        authenticate(),
        authorize("patient.read", patientResource),
        livePatient(patientInPath),
      ] as const,
      request: { params: IdParam },
      responses: {
        200: { description: "the team, in the order they joined", content: json(CareTeamSchema) },
        ...problemResponses("unauthorized", "forbidden", "not-found", "validation", "unavailable"),
      },
    }),
    async (c) => {
      const { id } = c.req.valid("param");
      const { store } = c.var.deps.runtime();
      if ((await store.streamVersion(patientStream(id))) === 0) {
        throw new NotFoundError("no such patient");
      }
      return c.json(await careTeamAnswer(c, id), 200);
    },
  )
  .openapi(
    createRoute({
      method: "post",
      path: "/{id}/care-team",
      tags: ["patients"],
      summary: "Add a practitioner to the patient's care team",
      description: "201 with the team when the practitioner joins, 200 with the team when they " +
        "were on it already (no event). Of concurrent identical adds exactly one is 201.",
      security: bearer,
      middleware: [
        authenticate(),
        authorize("careteam.manage"),
        livePatient(patientInPath),
      ] as const,
      request: {
        params: IdParam,
        body: { required: true, content: json(z.strictObject({ practitionerId: z.uuid() })) },
      },
      responses: {
        201: { description: "added; the team (audited as a read)", content: json(CareTeamSchema) },
        200: {
          description: "already on the team; the team (audited as a read)",
          content: json(CareTeamSchema),
        },
        ...problemResponses("unauthorized", "forbidden", "not-found", "validation", "unavailable"),
      },
    }),
    async (c) => {
      const { id } = c.req.valid("param");
      const { practitionerId } = c.req.valid("json");
      const { changed } = await changeCareTeam(
        c.var.deps.runtime().store,
        id,
        practitionerId,
        true,
        requestMetadata(c),
      );
      return c.json(await careTeamAnswer(c, id), changed ? 201 : 200);
    },
  )
  .openapi(
    createRoute({
      method: "delete",
      path: "/{id}/care-team/{practitionerId}",
      tags: ["patients"],
      summary: "Remove a practitioner from the patient's care team",
      description: "The care-team relation ends at once. Removing a non-member changes nothing.",
      security: bearer,
      middleware: [
        authenticate(),
        authorize("careteam.manage"),
        livePatient(patientInPath),
      ] as const,
      request: { params: z.object({ id: z.uuid(), practitionerId: z.uuid() }) },
      responses: {
        204: { description: "off the care team" },
        ...problemResponses("unauthorized", "forbidden", "not-found", "validation", "unavailable"),
      },
    }),
    async (c) => {
      const { id, practitionerId } = c.req.valid("param");
      await changeCareTeam(
        c.var.deps.runtime().store,
        id,
        practitionerId,
        false,
        requestMetadata(c),
      );
      return c.body(null, 204);
    },
  );
