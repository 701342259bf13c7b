import { createRoute, OpenAPIHono, z } from "@hono/zod-openapi";
import type { Context } from "hono";
import { GENDERS } from "../../events/patient.ts";
import type { PatientResource } from "../auth/policy.ts";
import { listScope } from "../auth/policy.ts";
import {
  auditRead,
  changeCareTeam,
  deletePatient,
  loadPatient,
  patientStream,
  registerPatient,
  relationsTo,
  restorePatient,
  updatePatient,
} from "../clinical/patients.ts";
import { ORDERINGS, searchPatients } from "../clinical/patient_search.ts";
import { normalize, PatientInput } from "../domain/patient.ts";
import { NotFoundError, ValidationError } from "../errors.ts";
import { allowed, authenticate, authorize, deny, requestMetadata } from "./auth_middleware.ts";
import type { AppEnv } from "./env.ts";
import { ifMatchVersion } from "./etag.ts";
import { problemResponses } from "./problem.ts";
import { bearer, json, versioned, VERSIONED_WRITE_PROBLEMS } from "./route_kit.ts";

const IdParam = z.object({ id: z.uuid() });

const Address = z.object({
  line1: z.string(),
  line2: z.string().nullable(),
  city: z.string(),
  state: z.string(),
  zip: z.string(),
});
const PatientSchema = z.object({
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

const PatientInputDoc = PatientInput;
const PatientPatchDoc = PatientInput.partial();

/** The patient resource of this request for the policy: id and the actor's relations. */
const patientResource = async (c: Context<AppEnv>): Promise<PatientResource | undefined> => {
  const id = c.req.param("id");
  if (!id || !z.uuid().safeParse(id).success) return undefined;
  const relations = await relationsTo(c.var.deps.runtime().store, c.get("actor")!, id);
  return { patientId: id, relations };
};

const now = (c: Context<AppEnv>) => c.var.deps.runtime().sessions.now();

/** The record, hidden when soft-deleted unless the actor may see deleted ones. */
const visible = async (c: Context<AppEnv>, id: string, asOf?: Date) => {
  const p = await loadPatient(c.var.deps.runtime().store, id, now(c), asOf);
  if (!p || (p.deleted && !(await allowed(c, "patient.see_deleted")))) {
    throw new NotFoundError("no such patient");
  }
  return p;
};

/** Patients: registration, search, reads (each one audited), edits, soft delete, care team. */
export const patients = new OpenAPIHono<AppEnv>()
  .openapi(
    createRoute({
      method: "post",
      path: "/v1/patients",
      tags: ["patients"],
      summary: "Register a patient",
      description:
        "The MRN is unique: of two concurrent registrations with one MRN one gets 201, " +
        "the other 409.",
      security: bearer,
      middleware: [authenticate(), authorize("patient.create")] as const,
      request: { body: { required: true, content: json(PatientInputDoc) } },
      responses: {
        201: { description: "registered", content: json(PatientSchema) },
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
      return c.json(versioned(c, p) as never, 201);
    },
  )
  .openapi(
    createRoute({
      method: "get",
      path: "/v1/patients",
      tags: ["patients"],
      summary: "Search and list patients",
      description:
        "`search` is a case-insensitive prefix of first name, last name, MRN or email. " +
        "Practitioners see only patients on their care team. The ids returned are audited " +
        "(`PatientsSearched`), never the query text.",
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
        ...(listScope(actor) === "related" ? { careTeamOf: actor.userId } : {}),
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
      path: "/v1/patients/{id}",
      tags: ["patients"],
      summary: "Read a patient (audited); `asOf` folds the record as it stood then",
      description: "With `asOf` (admin, auditor) the record is folded from the log up to that " +
        "instant.",
      security: bearer,
      middleware: [
        authenticate(),
        authorize(
          (c) => (c.req.query("asOf") ? "patient.read_as_of" : "patient.read"),
          patientResource,
        ),
      ] as const,
      request: {
        params: IdParam,
        query: z.object({ asOf: z.iso.datetime({ offset: true }).optional() }),
      },
      responses: {
        200: { description: "the patient", content: json(PatientSchema) },
        ...problemResponses("unauthorized", "forbidden", "not-found", "validation", "unavailable"),
      },
    }),
    async (c) => {
      const { id } = c.req.valid("param");
      const { asOf } = c.req.valid("query");
      const p = await visible(c, id, asOf ? new Date(asOf) : undefined);
      await auditRead(c.var.deps.runtime(), c.get("actor")!, {
        type: "PatientViewed",
        data: { patientId: id, asOf: asOf ? new Date(asOf).toISOString() : null },
      }, requestMetadata(c));
      return c.json(versioned(c, p) as never, 200);
    },
  )
  .openapi(
    createRoute({
      method: "put",
      path: "/v1/patients/{id}",
      tags: ["patients"],
      summary: "Replace a patient's demographics (If-Match honoured)",
      security: bearer,
      middleware: [authenticate(), authorize("patient.update", patientResource)] as const,
      request: { params: IdParam, body: { required: true, content: json(PatientInputDoc) } },
      responses: {
        200: { description: "the patient", content: json(PatientSchema) },
        ...problemResponses(...VERSIONED_WRITE_PROBLEMS),
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
      return c.json(versioned(c, p) as never, 200);
    },
  )
  .openapi(
    createRoute({
      method: "patch",
      path: "/v1/patients/{id}",
      tags: ["patients"],
      summary: "Change some of a patient's demographics (If-Match honoured)",
      security: bearer,
      middleware: [authenticate(), authorize("patient.update", patientResource)] as const,
      request: { params: IdParam, body: { required: true, content: json(PatientPatchDoc) } },
      responses: {
        200: { description: "the patient", content: json(PatientSchema) },
        ...problemResponses(...VERSIONED_WRITE_PROBLEMS),
      },
    }),
    async (c) => {
      const { id } = c.req.valid("param");
      const body = c.req.valid("json");
      const current = await visible(c, id);
      // absent fields stay; nested objects are replaced whole, as sent
      const merged = normalize({ ...current, ...body } as PatientInput);
      const changes = Object.fromEntries(
        Object.keys(body).map((k) => [k, merged[k as keyof typeof merged]]),
      );
      const p = await updatePatient(
        c.var.deps.runtime().store,
        id,
        changes,
        requestMetadata(c),
        now(c),
        ifMatchVersion(c),
      );
      return c.json(versioned(c, p) as never, 200);
    },
  )
  .openapi(
    createRoute({
      method: "delete",
      path: "/v1/patients/{id}",
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
      const reason = c.req.valid("json")?.reason ?? c.req.valid("query").reason ?? "";
      if (!reason.trim()) {
        throw new ValidationError("a reason is required", [{
          path: "reason",
          message: "required",
        }]);
      }
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
      path: "/v1/patients/{id}/restore",
      tags: ["patients"],
      summary: "Restore a soft-deleted patient (admin)",
      security: bearer,
      middleware: [authenticate(), authorize("patient.restore")] as const,
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
      // the answer is the whole record: audited as a read, like GET
      await auditRead(runtime, c.get("actor")!, {
        type: "PatientViewed",
        data: { patientId: id, asOf: null },
      }, requestMetadata(c));
      return c.json(versioned(c, p) as never, 200);
    },
  )
  .openapi(
    createRoute({
      method: "get",
      path: "/v1/patients/{id}/history",
      tags: ["patients"],
      summary: "The record's events with who, when and from where (audited)",
      security: bearer,
      middleware: [authenticate(), authorize("patient.history", patientResource)] as const,
      request: { params: IdParam },
      responses: {
        200: {
          description: "events, oldest first",
          content: json(z.object({
            items: z.array(z.object({
              version: z.number().int(),
              type: z.string(),
              recordedAt: z.string(),
              actorId: z.string().nullable(),
              actorRole: z.string().nullable(),
              data: z.record(z.string(), z.unknown()),
            })),
          })),
        },
        ...problemResponses("unauthorized", "forbidden", "not-found", "unavailable"),
      },
    }),
    async (c) => {
      const { id } = c.req.valid("param");
      const { store } = c.var.deps.runtime();
      const events = await store.readStream(patientStream(id));
      if (events.length === 0) throw new NotFoundError("no such patient");
      await auditRead(c.var.deps.runtime(), c.get("actor")!, {
        type: "PatientHistoryViewed",
        data: { patientId: id },
      }, requestMetadata(c));
      c.header("Cache-Control", "no-store");
      return c.json({
        items: events.map((e) => ({
          version: e.streamVersion,
          type: e.type,
          recordedAt: e.recordedAt.toISOString(),
          actorId: e.metadata.actorId ?? null,
          actorRole: e.metadata.actorRole ?? null,
          data: e.data,
        })),
      }, 200);
    },
  )
  .openapi(
    createRoute({
      method: "post",
      path: "/v1/patients/{id}/care-team",
      tags: ["patients"],
      summary: "Add a practitioner to the patient's care team",
      security: bearer,
      middleware: [authenticate(), authorize("careteam.manage")] as const,
      request: {
        params: IdParam,
        body: { required: true, content: json(z.strictObject({ practitionerId: z.uuid() })) },
      },
      responses: {
        204: { description: "on the care team" },
        ...problemResponses("unauthorized", "forbidden", "not-found", "validation"),
      },
    }),
    async (c) => {
      const { id } = c.req.valid("param");
      const { practitionerId } = c.req.valid("json");
      await changeCareTeam(
        c.var.deps.runtime().store,
        id,
        practitionerId,
        true,
        requestMetadata(c),
      );
      return c.body(null, 204);
    },
  )
  .openapi(
    createRoute({
      method: "delete",
      path: "/v1/patients/{id}/care-team/{practitionerId}",
      tags: ["patients"],
      summary: "Remove a practitioner from the patient's care team",
      security: bearer,
      middleware: [authenticate(), authorize("careteam.manage")] as const,
      request: { params: z.object({ id: z.uuid(), practitionerId: z.uuid() }) },
      responses: {
        204: { description: "off the care team" },
        ...problemResponses("unauthorized", "forbidden", "not-found", "validation"),
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
