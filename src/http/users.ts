import { createRoute, OpenAPIHono, z } from "@hono/zod-openapi";
import { ROLES } from "../../events/user.ts";
import {
  changePassword,
  getUser,
  listUsers,
  registerUser,
  updateProfile,
  updateUser,
} from "../auth/accounts.ts";
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
  NOT_MODIFIED,
  sendVersioned,
  versioned,
  VERSIONED_WRITE_PROBLEMS,
} from "./route_kit.ts";

const RoleSchema = z.enum(ROLES).openapi("Role");

export const UserSchema = z.object({
  id: z.uuid(),
  email: z.string(),
  name: z.string().nullable(),
  role: RoleSchema,
  active: z.boolean(),
  pending: z.boolean().openapi({ description: "self-registered, awaiting approval" }),
  patientId: z.uuid().nullable(),
  phone: z.string().nullable(),
  specialization: z.string().nullable(),
  mfaEnabled: z.boolean(),
  createdAt: z.string(),
  updatedAt: z.string(),
}).openapi("User");

const CreateUserBody = z.strictObject({
  email: z.email().max(320),
  name: z.string().trim().min(1).max(200),
  role: RoleSchema,
  password: z.string().min(12).max(1024),
  patientId: z.uuid().nullable().optional().openapi({
    description: "role patient only: the patient's own record; without one, a family member " +
      "who sees nothing until made a proxy",
  }),
}).openapi("CreateUserRequest");

const PatchUserBody = z.strictObject({
  role: RoleSchema.optional(),
  patientId: z.uuid().nullable().optional(),
  active: z.boolean().optional(),
}).openapi("PatchUserRequest");

const PatchMeBody = z.strictObject({
  name: z.string().trim().min(1).max(200).optional(),
  phone: z.string().regex(/^\+[1-9]\d{1,14}$/, "E.164, e.g. +15551234567").nullable().optional(),
  specialization: z.string().trim().max(200).nullable().optional(),
}).openapi("PatchMeRequest");

const PasswordBody = z.strictObject({
  currentPassword: z.string().min(1).max(1024),
  newPassword: z.string().min(12).max(1024),
}).openapi("ChangePasswordRequest");

const UserList = z.object({
  items: z.array(UserSchema),
  nextCursor: z.string().nullable(),
  total: z.number().int(),
}).openapi("UserList");

const IdParam = z.object({ id: z.uuid() });
const strip = <T extends { version: number }>(u: T): Omit<T, "version"> => {
  const { version: _v, ...rest } = u;
  return rest;
};

/** User administration (admins), mounted under `/v1/users`. */
export const users = new OpenAPIHono<AppEnv>()
  .openapi(
    createRoute({
      method: "post",
      path: "/",
      tags: ["users"],
      summary: "Create a user",
      security: bearer,
      middleware: [authenticate(), authorize("user.create")] as const,
      request: { body: { required: true, content: json(CreateUserBody) } },
      responses: {
        201: { description: "created", headers: CREATED_HEADERS, content: json(UserSchema) },
        ...problemResponses("unauthorized", "forbidden", "validation", "conflict"),
      },
    }),
    async (c) => {
      const { store, passwordParams } = c.var.deps.runtime();
      const user = await registerUser(
        store,
        c.req.valid("json"),
        requestMetadata(c),
        passwordParams,
      );
      c.header("Location", `/v1/users/${user.id}`);
      return c.json(versioned(c, user), 201);
    },
  )
  .openapi(
    createRoute({
      method: "get",
      path: "/",
      tags: ["users"],
      summary: "List users (by email)",
      security: bearer,
      middleware: [authenticate(), authorize("user.list")] as const,
      request: {
        query: z.object({
          limit: z.coerce.number().int().min(1).max(100).default(50),
          cursor: z.string().max(500).optional(),
          role: RoleSchema.optional(),
        }),
      },
      responses: {
        200: { description: "a page of users", content: json(UserList) },
        ...problemResponses("unauthorized", "forbidden", "validation"),
      },
    }),
    async (c) => {
      const page = await listUsers(c.var.deps.runtime().store, c.req.valid("query"));
      return c.json({ ...page, items: page.items.map(strip) }, 200);
    },
  )
  .openapi(
    createRoute({
      method: "get",
      path: "/{id}",
      tags: ["users"],
      summary: "Read a user",
      security: bearer,
      middleware: [authenticate(), authorize("user.read")] as const,
      request: { params: IdParam, headers: IF_NONE_MATCH },
      responses: {
        200: { description: "the user", content: json(UserSchema) },
        ...NOT_MODIFIED,
        ...problemResponses("unauthorized", "forbidden", "not-found", "validation"),
      },
    }),
    async (c) => {
      const user = await getUser(c.var.deps.runtime().store, c.req.valid("param").id);
      if (!user) throw new NotFoundError("no such user");
      return sendVersioned(c, user);
    },
  )
  .openapi(
    createRoute({
      method: "patch",
      path: "/{id}",
      tags: ["users"],
      summary: "Change a user's role, deactivate / reactivate them, or approve a sign-up",
      description:
        "Honours `If-Match` (412 on mismatch). A deactivated user's tokens stop working at once.",
      security: bearer,
      middleware: [authenticate(), authorize("user.update")] as const,
      request: { params: IdParam, body: { required: true, content: json(PatchUserBody) } },
      responses: {
        200: { description: "the user", content: json(UserSchema) },
        ...problemResponses(...VERSIONED_WRITE_PROBLEMS),
      },
    }),
    async (c) => {
      const user = await updateUser(
        c.var.deps.runtime().store,
        c.req.valid("param").id,
        c.req.valid("json"),
        requestMetadata(c),
        ifMatchVersion(c),
      );
      return c.json(versioned(c, user), 200);
    },
  );

/** The caller's own account, mounted under `/v1/me`. */
export const me = new OpenAPIHono<AppEnv>()
  .openapi(
    createRoute({
      method: "get",
      path: "/",
      tags: ["users"],
      summary: "The caller's own account",
      security: bearer,
      middleware: [authenticate(), authorize("me.read")] as const,
      request: { headers: IF_NONE_MATCH },
      responses: {
        200: { description: "the user", content: json(UserSchema) },
        ...NOT_MODIFIED,
        ...problemResponses("unauthorized"),
      },
    }),
    async (c) => {
      const user = (await getUser(c.var.deps.runtime().store, c.get("actor")!.userId))!;
      return sendVersioned(c, user);
    },
  )
  .openapi(
    createRoute({
      method: "patch",
      path: "/",
      tags: ["users"],
      summary: "Update the caller's name, phone or specialization",
      security: bearer,
      middleware: [authenticate(), authorize("me.update")] as const,
      request: { body: { required: true, content: json(PatchMeBody) } },
      responses: {
        200: { description: "the user", content: json(UserSchema) },
        ...problemResponses("unauthorized", "validation"),
      },
    }),
    async (c) => {
      const user = await updateProfile(
        c.var.deps.runtime().store,
        c.get("actor")!.userId,
        c.req.valid("json"),
        requestMetadata(c),
      );
      return c.json(versioned(c, user), 200);
    },
  )
  .openapi(
    createRoute({
      method: "post",
      path: "/password",
      tags: ["users"],
      summary: "Change the caller's password; every other session of theirs ends",
      description: "A wrong `currentPassword` counts towards the account's lock, as a failed " +
        "login does; a locked account refuses even the right one (the same 422).",
      security: bearer,
      middleware: [authenticate(), authorize("me.update")] as const,
      request: { body: { required: true, content: json(PasswordBody) } },
      responses: {
        204: { description: "changed" },
        ...problemResponses("unauthorized", "validation"),
      },
    }),
    async (c) => {
      const { store, sessions, passwordParams } = c.var.deps.runtime();
      const actor = c.get("actor")!;
      const body = c.req.valid("json");
      const meta = requestMetadata(c);
      await changePassword(
        store,
        actor.userId,
        body.currentPassword,
        body.newPassword,
        sessions.now(),
        meta,
        passwordParams,
      );
      await sessions.logoutAll(actor, meta, actor.sessionId);
      return c.body(null, 204);
    },
  );
