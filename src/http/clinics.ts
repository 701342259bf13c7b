import { createRoute, OpenAPIHono, z } from "@hono/zod-openapi";
import type { Context } from "hono";
import { ClinicDetails, EMPLOYMENT_TYPES, OperatingHours } from "../../events/clinic.ts";
import {
  addPractitioner,
  ClinicPatch,
  MembershipInput,
  MembershipPatch,
  registerClinic,
  updateClinic,
  updateMembership,
} from "../clinical/clinics.ts";
import { getMembership, listMembers } from "../clinical/clinic_members.ts";
import {
  addOwner,
  getOwner,
  listOwners,
  OwnerInput,
  removeOwner,
} from "../clinical/clinic_owners.ts";
import { getClinic, listClinics } from "../clinical/clinic_search.ts";
import { NotFoundError } from "../errors.ts";
import { authenticate, authorize, requestMetadata } from "./auth_middleware.ts";
import type { AppEnv } from "./env.ts";
import { ifMatchVersion } from "./etag.ts";
import { problemResponses } from "./problem.ts";
import {
  bearer,
  CREATED_HEADERS,
  IF_NONE_MATCH,
  json,
  LOCATION_HEADERS,
  NOT_MODIFIED,
  sendVersioned,
  versioned,
  VERSIONED_WRITE_PROBLEMS,
} from "./route_kit.ts";

const IdParam = z.object({ id: z.uuid() });

/** A new clinic: a name and a license number; the rest may come later (empty until then). */
const ClinicCreate = ClinicDetails.extend({
  address: ClinicDetails.shape.address.default(null),
  phone: ClinicDetails.shape.phone.default(null),
  email: ClinicDetails.shape.email.default(null),
  operatingHours: ClinicDetails.shape.operatingHours.default({}),
  services: ClinicDetails.shape.services.default([]),
}).openapi("ClinicCreate");

export const ClinicSchema = z.object({
  id: z.uuid(),
  name: z.string(),
  licenseNumber: z.string(),
  address: z.object({
    line1: z.string(),
    line2: z.string().nullable(),
    city: z.string(),
    state: z.string(),
    zip: z.string(),
  }).nullable(),
  phone: z.string().nullable(),
  email: z.string().nullable(),
  operatingHours: OperatingHours,
  services: z.array(z.string()),
  active: z.boolean(),
  createdAt: z.string(),
  updatedAt: z.string(),
}).openapi("Clinic");

const ClinicList = z.object({
  items: z.array(ClinicSchema),
  nextCursor: z.string().nullable(),
  total: z.number().int(),
}).openapi("ClinicList");

const MemberParams = z.object({ id: z.uuid(), userId: z.uuid() });

const MembershipSchema = z.object({
  clinicId: z.uuid(),
  userId: z.uuid(),
  employmentType: z.enum(EMPLOYMENT_TYPES),
  active: z.boolean().openapi({ description: "false once the practitioner left the clinic" }),
  joinedAt: z.string(),
  joinedBy: z.uuid().nullable().openapi({ description: "who added them" }),
  updatedAt: z.string(),
}).openapi("ClinicMembership");

const MembershipList = z.object({
  items: z.array(MembershipSchema),
  nextCursor: z.string().nullable(),
  total: z.number().int(),
}).openapi("ClinicMembershipList");

const OwnerSchema = z.object({
  clinicId: z.uuid(),
  userId: z.uuid(),
  addedAt: z.string(),
  addedBy: z.uuid().nullable().openapi({ description: "who made them an owner" }),
}).openapi("ClinicOwner");

/** The membership as the read model holds it after a write (inline: the write is in it). */
const membership = async (c: Context<AppEnv>, clinicId: string, userId: string) => {
  const m = await getMembership(c.var.deps.runtime().store, clinicId, userId);
  if (!m) throw new NotFoundError("not a member of this clinic");
  c.header("Cache-Control", "no-store");
  return m;
};

/** The clinic as the directory holds it after a write (inline: the write is in it). */
const written = async (c: Context<AppEnv>, id: string) => {
  const clinic = await getClinic(c.var.deps.runtime().store, id);
  if (!clinic) throw new NotFoundError("no such clinic");
  return versioned(c, clinic);
};

/**
 * The clinic directory, mounted under `/v1/clinics`: admins and clinical
 * operations write it, every signed-in user reads it. Clinic data is not
 * PHI, so reads are not audited.
 */
export const clinics = new OpenAPIHono<AppEnv>()
  .openapi(
    createRoute({
      method: "post",
      path: "/",
      tags: ["clinics"],
      summary: "Register a clinic",
      description: "The license number is unique (trimmed, case-insensitive): of two concurrent " +
        "registrations with one license one gets 201, the other 409 `/problems/conflict`.",
      security: bearer,
      middleware: [authenticate(), authorize("clinic.create")] as const,
      request: { body: { required: true, content: json(ClinicCreate) } },
      responses: {
        201: { description: "registered", headers: CREATED_HEADERS, content: json(ClinicSchema) },
        ...problemResponses("unauthorized", "forbidden", "validation", "conflict"),
      },
    }),
    async (c) => {
      const clinic = await registerClinic(
        c.var.deps.runtime().store,
        c.req.valid("json"),
        requestMetadata(c),
      );
      c.header("Location", `/v1/clinics/${clinic.id}`);
      return c.json(await written(c, clinic.id), 201);
    },
  )
  .openapi(
    createRoute({
      method: "get",
      path: "/",
      tags: ["clinics"],
      summary: "Search the clinic directory",
      description: "`q` matches any part of the name, case-insensitively; `active` filters by " +
        "the active flag. Ordered by name, keyset pages (`cursor` from `nextCursor`).",
      security: bearer,
      middleware: [authenticate(), authorize("clinic.read")] as const,
      request: {
        query: z.object({
          q: z.string().trim().min(1).max(200).optional(),
          active: z.enum(["true", "false"]).optional(),
          limit: z.coerce.number().int().min(1).max(100).default(20),
          cursor: z.string().max(1000).optional(),
        }),
      },
      responses: {
        200: { description: "a page of clinics", content: json(ClinicList) },
        ...problemResponses("unauthorized", "forbidden", "validation"),
      },
    }),
    async (c) => {
      const { active, ...q } = c.req.valid("query");
      const page = await listClinics(c.var.deps.runtime().store, {
        ...q,
        ...(active ? { active: active === "true" } : {}),
      });
      return c.json({ ...page, items: page.items.map(({ version: _v, ...rest }) => rest) }, 200);
    },
  )
  .openapi(
    createRoute({
      method: "get",
      path: "/{id}",
      tags: ["clinics"],
      summary: "Read a clinic",
      security: bearer,
      middleware: [authenticate(), authorize("clinic.read")] as const,
      request: { params: IdParam, headers: IF_NONE_MATCH },
      responses: {
        200: { description: "the clinic", content: json(ClinicSchema) },
        ...NOT_MODIFIED,
        ...problemResponses("unauthorized", "forbidden", "not-found", "validation"),
      },
    }),
    async (c) => {
      const clinic = await getClinic(c.var.deps.runtime().store, c.req.valid("param").id);
      if (!clinic) throw new NotFoundError("no such clinic");
      return sendVersioned(c, clinic);
    },
  )
  .openapi(
    createRoute({
      method: "patch",
      path: "/{id}",
      tags: ["clinics"],
      summary: "Change a clinic; `active` deactivates or reactivates it (If-Match honoured)",
      description: "Only the fields given change. A new license number is claimed as on " +
        "registration (409 if another clinic holds it); a clinic keeps the licenses it held. " +
        "An inactive clinic accepts no new members.",
      security: bearer,
      middleware: [authenticate(), authorize("clinic.update")] as const,
      request: { params: IdParam, body: { required: true, content: json(ClinicPatch) } },
      responses: {
        200: { description: "the clinic", content: json(ClinicSchema) },
        ...problemResponses(...VERSIONED_WRITE_PROBLEMS),
      },
    }),
    async (c) => {
      const { id } = c.req.valid("param");
      await updateClinic(
        c.var.deps.runtime().store,
        id,
        c.req.valid("json"),
        requestMetadata(c),
        ifMatchVersion(c),
      );
      return c.json(await written(c, id), 200);
    },
  )
  .openapi(
    createRoute({
      method: "post",
      path: "/{id}/practitioners",
      tags: ["clinics"],
      summary: "Add a practitioner to a clinic",
      description: "Only an existing, active user with the practitioner role (unknown user: " +
        "404; another: 422). A member added again is a 409 (a former member rejoins with " +
        "PATCH `active: true`); an inactive clinic takes no new members (409). Of concurrent " +
        "adds of one practitioner exactly one is 201.",
      security: bearer,
      middleware: [authenticate(), authorize("clinic.manage_practitioners")] as const,
      request: { params: IdParam, body: { required: true, content: json(MembershipInput) } },
      responses: {
        201: { description: "added", headers: LOCATION_HEADERS, content: json(MembershipSchema) },
        ...problemResponses("unauthorized", "forbidden", "not-found", "validation", "conflict"),
      },
    }),
    async (c) => {
      const { id } = c.req.valid("param");
      const body = c.req.valid("json");
      await addPractitioner(c.var.deps.runtime().store, id, body, requestMetadata(c));
      c.header("Location", `/v1/clinics/${id}/practitioners/${body.userId}`);
      return c.json(await membership(c, id, body.userId), 201);
    },
  )
  .openapi(
    createRoute({
      method: "get",
      path: "/{id}/practitioners",
      tags: ["clinics"],
      summary: "List a clinic's practitioners, with who added them and when",
      description: "Current and former members (`active`), in the order they joined; " +
        "`active=true|false` filters; keyset pages.",
      security: bearer,
      middleware: [authenticate(), authorize("clinic.read")] as const,
      request: {
        params: IdParam,
        query: z.object({
          active: z.enum(["true", "false"]).optional(),
          limit: z.coerce.number().int().min(1).max(100).default(50),
          cursor: z.string().max(1000).optional(),
        }),
      },
      responses: {
        200: { description: "a page of members", content: json(MembershipList) },
        ...problemResponses("unauthorized", "forbidden", "not-found", "validation"),
      },
    }),
    async (c) => {
      const { id } = c.req.valid("param");
      const { active, ...q } = c.req.valid("query");
      const { store } = c.var.deps.runtime();
      if (!(await getClinic(store, id))) throw new NotFoundError("no such clinic");
      const page = await listMembers(store, id, {
        ...q,
        ...(active ? { active: active === "true" } : {}),
      });
      return c.json(page, 200);
    },
  )
  .openapi(
    createRoute({
      method: "get",
      path: "/{id}/practitioners/{userId}",
      tags: ["clinics"],
      summary: "Read one practitioner's membership of a clinic",
      security: bearer,
      middleware: [authenticate(), authorize("clinic.read")] as const,
      request: { params: MemberParams },
      responses: {
        200: { description: "the membership", content: json(MembershipSchema) },
        ...problemResponses("unauthorized", "forbidden", "not-found", "validation"),
      },
    }),
    async (c) => {
      const { id, userId } = c.req.valid("param");
      return c.json(await membership(c, id, userId), 200);
    },
  )
  .openapi(
    createRoute({
      method: "patch",
      path: "/{id}/practitioners/{userId}",
      tags: ["clinics"],
      summary: "Change a membership: `active: false` leaves the clinic, `true` rejoins",
      description: "Leaving ends at once every use the practitioner made of the clinic's " +
        "grants. Rejoining follows the rules of joining (an active practitioner, an active " +
        "clinic). Not a member: 404.",
      security: bearer,
      middleware: [authenticate(), authorize("clinic.manage_practitioners")] as const,
      request: { params: MemberParams, body: { required: true, content: json(MembershipPatch) } },
      responses: {
        200: { description: "the membership", content: json(MembershipSchema) },
        ...problemResponses("unauthorized", "forbidden", "not-found", "validation", "conflict"),
      },
    }),
    async (c) => {
      const { id, userId } = c.req.valid("param");
      await updateMembership(
        c.var.deps.runtime().store,
        id,
        userId,
        c.req.valid("json"),
        requestMetadata(c),
      );
      return c.json(await membership(c, id, userId), 200);
    },
  )
  .openapi(
    createRoute({
      method: "post",
      path: "/{id}/owners",
      tags: ["clinics"],
      summary: "Make a clinic_owner user an owner of a clinic",
      description: "The user must be an active user with the role `clinic_owner` (else 422 " +
        "naming `userId`, an unknown user too); unknown clinic: 404. Idempotent: 201 when " +
        "added, 200 (and no new event) when already an owner, so of concurrent adds of one " +
        "user exactly one appends `ClinicOwnerAdded`. From then on the owner reads the chart " +
        "entries recorded at the clinic, nothing else of the patients.",
      security: bearer,
      middleware: [authenticate(), authorize("clinic.manage_owners")] as const,
      request: { params: IdParam, body: { required: true, content: json(OwnerInput) } },
      responses: {
        200: { description: "already an owner", content: json(OwnerSchema) },
        201: { description: "added", headers: LOCATION_HEADERS, content: json(OwnerSchema) },
        ...problemResponses("unauthorized", "forbidden", "not-found", "validation"),
      },
    }),
    async (c) => {
      const { id } = c.req.valid("param");
      const { store } = c.var.deps.runtime();
      const { userId, added } = await addOwner(store, id, c.req.valid("json"), requestMetadata(c));
      const owner = await getOwner(store, id, userId);
      // a removal between the add and this read: the add is not what the caller sees now
      if (!owner) throw new NotFoundError("not an owner of this clinic");
      c.header("Location", `/v1/clinics/${id}/owners/${userId}`);
      c.header("Cache-Control", "no-store");
      return added ? c.json(owner, 201) : c.json(owner, 200);
    },
  )
  .openapi(
    createRoute({
      method: "get",
      path: "/{id}/owners",
      tags: ["clinics"],
      summary: "List a clinic's owners, with who added them and when",
      description: "Current owners in the order they were added (one page: a clinic has few).",
      security: bearer,
      middleware: [authenticate(), authorize("clinic.manage_owners")] as const,
      request: { params: IdParam },
      responses: {
        200: {
          description: "the owners",
          content: json(z.object({ items: z.array(OwnerSchema), total: z.number().int() })),
        },
        ...problemResponses("unauthorized", "forbidden", "not-found", "validation"),
      },
    }),
    async (c) => {
      const { id } = c.req.valid("param");
      const { store } = c.var.deps.runtime();
      if (!(await getClinic(store, id))) throw new NotFoundError("no such clinic");
      const items = await listOwners(store, id);
      c.header("Cache-Control", "no-store");
      return c.json({ items, total: items.length }, 200);
    },
  )
  .openapi(
    createRoute({
      method: "delete",
      path: "/{id}/owners/{userId}",
      tags: ["clinics"],
      summary: "End an ownership: the owner's reads of the clinic's chart entries end at once",
      description: "Not an owner (or no such clinic): 404.",
      security: bearer,
      middleware: [authenticate(), authorize("clinic.manage_owners")] as const,
      request: { params: MemberParams },
      responses: {
        204: { description: "no longer an owner" },
        ...problemResponses("unauthorized", "forbidden", "not-found", "validation"),
      },
    }),
    async (c) => {
      const { id, userId } = c.req.valid("param");
      await removeOwner(c.var.deps.runtime().store, id, userId, requestMetadata(c));
      return c.body(null, 204);
    },
  );
