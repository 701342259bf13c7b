import { createRoute, OpenAPIHono, z } from "@hono/zod-openapi";
import { ENCOUNTER_STATUSES } from "../../events/encounter.ts";
import { refusedToPlanFor } from "../auth/policy.ts";
import {
  changeEncounterStatus,
  listEncounters,
  loadEncounter,
  planEncounter,
} from "../clinical/encounters.ts";
import { auditRead } from "../clinical/patients.ts";
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

const EncounterSchema = z.object({
  id: z.uuid(),
  patientId: z.uuid(),
  practitionerId: z.uuid(),
  startsAt: z.string(),
  reason: z.string().nullable(),
  status: z.enum(ENCOUNTER_STATUSES),
  createdAt: z.string(),
  updatedAt: z.string(),
}).openapi("Encounter");

const PlanBody = z.strictObject({
  practitionerId: z.uuid(),
  startsAt: z.iso.datetime({ offset: true }),
  reason: z.string().trim().min(1).max(1000),
}).openapi("PlanEncounterRequest");

/** A patient's encounters (mounted under `/v1/patients`): planned, listed (audited). */
export const patientEncounters = new OpenAPIHono<AppEnv>()
  .openapi(
    createRoute({
      method: "post",
      path: "/{id}/encounters",
      tags: ["encounters"],
      summary: "Plan an encounter for a patient",
      description: "Naming a practitioner other than yourself needs `careteam.manage` (403 " +
        "otherwise): the named practitioner gains a relation to the patient.",
      security: bearer,
      middleware: [
        authenticate(),
        authorize("encounter.create", byPatient),
        livePatient(patientInPath),
      ] as const,
      request: {
        params: z.object({ id: z.uuid() }),
        body: { required: true, content: json(PlanBody) },
      },
      responses: {
        201: { description: "planned", headers: CREATED_HEADERS, content: json(EncounterSchema) },
        ...problemResponses("unauthorized", "forbidden", "not-found", "validation", "conflict"),
      },
    }),
    async (c) => {
      const refused = refusedToPlanFor(c.get("actor")!, c.req.valid("json").practitionerId);
      if (refused) await deny(c, refused);
      const e = await planEncounter(
        c.var.deps.runtime().store,
        { patientId: c.req.valid("param").id, ...c.req.valid("json") },
        requestMetadata(c),
      );
      c.header("Location", `/v1/encounters/${e.id}`);
      return c.json(versioned(c, e), 201);
    },
  )
  .openapi(
    createRoute({
      method: "get",
      path: "/{id}/encounters",
      tags: ["encounters"],
      summary: "A patient's encounters (audited)",
      security: bearer,
      middleware: [
        authenticate(),
        authorize("encounter.list", byPatient),
        livePatient(patientInPath),
      ] as const,
      request: { params: z.object({ id: z.uuid() }) },
      responses: {
        200: {
          description: "soonest first",
          content: json(z.object({
            items: z.array(EncounterSchema),
            nextCursor: z.null().openapi({ description: "one page holds them all" }),
            total: z.number().int(),
          })),
        },
        ...problemResponses("unauthorized", "forbidden", "validation", "unavailable"),
      },
    }),
    async (c) => {
      const patientId = c.req.valid("param").id;
      const runtime = c.var.deps.runtime();
      const items = (await listEncounters(runtime.store, patientId)).map(({ version: _v, ...e }) =>
        e
      );
      await auditRead(runtime, c.get("actor")!, {
        type: "EncountersListed",
        data: { patientId, encounterIds: items.map((e) => e.id) },
      }, requestMetadata(c));
      c.header("Cache-Control", "no-store");
      return c.json({ items, nextCursor: null, total: items.length }, 200);
    },
  );

/** Encounters (mounted under `/v1/encounters`): read (audited), moved through their statuses. */
export const encounters = new OpenAPIHono<AppEnv>()
  .openapi(
    createRoute({
      method: "get",
      path: "/{id}",
      tags: ["encounters"],
      summary: "Read an encounter (audited)",
      security: bearer,
      middleware: [
        authenticate(),
        authorize("encounter.read", byEncounter),
        livePatient(patientOfEncounter),
      ] as const,
      request: { params: z.object({ id: z.uuid() }), headers: IF_NONE_MATCH },
      responses: {
        200: { description: "the encounter", content: json(EncounterSchema) },
        ...NOT_MODIFIED,
        ...problemResponses("unauthorized", "forbidden", "not-found", "validation", "unavailable"),
      },
    }),
    async (c) => {
      const runtime = c.var.deps.runtime();
      const e = await loadEncounter(runtime.store, c.req.valid("param").id);
      if (!e) throw new NotFoundError("no such encounter");
      await auditRead(runtime, c.get("actor")!, {
        type: "EncounterViewed",
        data: { encounterId: e.id, patientId: e.patientId },
      }, requestMetadata(c));
      return sendVersioned(c, e);
    },
  )
  .openapi(
    createRoute({
      method: "patch",
      path: "/{id}",
      tags: ["encounters"],
      summary: "Change an encounter's status",
      description: "planned → in_progress → finished, or cancelled from any state that is not " +
        "finished; anything else is 409. Honours If-Match.",
      security: bearer,
      middleware: [
        authenticate(),
        authorize("encounter.update", byEncounter),
        livePatient(patientOfEncounter),
      ] as const,
      request: {
        params: z.object({ id: z.uuid() }),
        body: {
          required: true,
          content: json(z.strictObject({ status: z.enum(ENCOUNTER_STATUSES) })),
        },
      },
      responses: {
        200: { description: "the encounter", content: json(EncounterSchema) },
        ...problemResponses(...VERSIONED_WRITE_PROBLEMS),
      },
    }),
    async (c) => {
      const e = await changeEncounterStatus(
        c.var.deps.runtime().store,
        c.req.valid("param").id,
        c.req.valid("json").status,
        requestMetadata(c),
        ifMatchVersion(c),
      );
      return c.json(versioned(c, e), 200);
    },
  );
