import { createRoute, OpenAPIHono, z } from "@hono/zod-openapi";
import type { Context } from "hono";
import { GRANT_SOURCES, GRANTEE_KINDS } from "../../events/access.ts";
import {
  GRANT_STATUSES,
  grantPatient,
  patientGrants,
  revokeGrant,
  usableGrantsOf,
} from "../clinical/grants.ts";
import { auditRead, patientStream } from "../clinical/patients.ts";
import { NotFoundError } from "../errors.ts";
import { authenticate, authorize, requestMetadata } from "./auth_middleware.ts";
import type { AppEnv } from "./env.ts";
import {
  byPatient,
  livePatient,
  patientInPath,
  relationRule,
  resourceOf,
} from "./patient_scope.ts";
import { problemResponses } from "./problem.ts";
import { bearer, json } from "./route_kit.ts";

const GrantSchema = z.object({
  id: z.uuid(),
  patientId: z.uuid(),
  grantee: z.object({
    kind: z.enum(GRANTEE_KINDS),
    id: z.uuid(),
    name: z.string().nullable(),
  }),
  source: z.enum(GRANT_SOURCES),
  sourceId: z.uuid().openapi({ description: "the access request, shared code or break-glass" }),
  purpose: z.string().nullable().openapi({ description: "why (PHI); null once erased" }),
  grantedAt: z.string(),
  grantedBy: z.string().nullable(),
  expiresAt: z.string(),
  status: z.enum(GRANT_STATUSES).openapi({
    description: "by the clock: an active grant past its expiry is expired at once",
  }),
  endedAt: z.string().nullable(),
}).openapi("Grant");

const MyGrantSchema = GrantSchema.extend({
  patient: z.object({ firstName: z.string().nullable(), lastName: z.string().nullable() }),
}).openapi("UsableGrant");

const page = <T extends z.ZodType>(item: T) =>
  z.object({ items: z.array(item), nextCursor: z.string().nullable(), total: z.number().int() });

const Paging = {
  limit: z.coerce.number().int().min(1).max(100).default(20),
  cursor: z.string().max(1000).optional(),
};

const now = (c: Context<AppEnv>) => c.var.deps.runtime().sessions.now();

/** Records a read of grants (their purposes are PHI). */
const auditGrants = (c: Context<AppEnv>, items: { id: string; patientId: string }[]) =>
  auditRead(c.var.deps.runtime(), c.get("actor")!, {
    type: "GrantsViewed",
    data: {
      patientIds: [...new Set(items.map((g) => g.patientId))],
      grantIds: items.map((g) => g.id),
    },
  }, requestMetadata(c));

/** A patient's grants (mounted under `/v1/patients`). */
export const patientGrantRoutes = new OpenAPIHono<AppEnv>()
  .openapi(
    createRoute({
      method: "get",
      path: "/{id}/grants",
      tags: ["grants"],
      summary: "A patient's grants of access (audited)",
      description: "The patient, their full proxies and admins. Newest first; `status` " +
        "filters by the status as of now.",
      security: bearer,
      middleware: [
        authenticate(),
        authorize("grant.list", byPatient),
        livePatient(patientInPath),
      ] as const,
      request: {
        params: z.object({ id: z.uuid() }),
        query: z.object({ ...Paging, status: z.enum(GRANT_STATUSES).optional() }),
      },
      responses: {
        200: { description: "a page", content: json(page(GrantSchema)) },
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
      const { id } = c.req.valid("param");
      const { store } = c.var.deps.runtime();
      if ((await store.streamVersion(patientStream(id))) === 0) {
        throw new NotFoundError("no such patient");
      }
      const result = await patientGrants(store, id, c.req.valid("query"), now(c));
      await auditGrants(c, result.items);
      c.header("Cache-Control", "no-store");
      return c.json(result, 200);
    },
  );

/** The grants a practitioner can use (mounted under `/v1/me`). */
export const myGrantRoutes = new OpenAPIHono<AppEnv>()
  .openapi(
    createRoute({
      method: "get",
      path: "/grants",
      tags: ["grants"],
      summary: "The grants the caller can use now (audited)",
      description: "A practitioner's grants: to them, or to a clinic where they are an active " +
        "member. Whose record, why, until when.",
      security: bearer,
      middleware: [authenticate(), authorize("grant.list_own")] as const,
      request: { query: z.object(Paging) },
      responses: {
        200: { description: "a page", content: json(page(MyGrantSchema)) },
        ...problemResponses("unauthorized", "forbidden", "validation", "unavailable"),
      },
    }),
    async (c) => {
      const result = await usableGrantsOf(
        c.var.deps.runtime().store,
        c.get("actor")!,
        c.req.valid("query"),
        relationRule(c),
      );
      await auditGrants(c, result.items);
      c.header("Cache-Control", "no-store");
      const items = result.items.map((g) => ({ ...g, patient: g.patient! }));
      return c.json({ ...result, items }, 200);
    },
  );

/** The patient a grant in the path is to, memoised per request. */
const seen = new WeakMap<Context<AppEnv>, Promise<string | undefined>>();
const patientOfGrant = (c: Context<AppEnv>) => {
  let p = seen.get(c);
  if (!p) {
    const id = c.req.param("id");
    p = id && z.uuid().safeParse(id).success
      ? grantPatient(c.var.deps.runtime().store, id)
      : Promise.resolve(undefined);
    seen.set(c, p);
  }
  return p;
};
const byGrant = async (c: Context<AppEnv>) => resourceOf(c, await patientOfGrant(c));

/** Grants by id (mounted under `/v1/grants`). */
export const grantRoutes = new OpenAPIHono<AppEnv>()
  .openapi(
    createRoute({
      method: "delete",
      path: "/{id}",
      tags: ["grants"],
      summary: "Revoke a grant now",
      description: "The patient, a full proxy of theirs, or an admin. The grantee's next " +
        "request through it is refused. A grant that has ended (revoked, or expired by the " +
        "clock) is a 409; of concurrent revocations one wins, the others get 409.",
      security: bearer,
      middleware: [authenticate(), authorize("grant.revoke", byGrant)] as const,
      request: { params: z.object({ id: z.uuid() }) },
      responses: {
        204: { description: "revoked" },
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
      const { id } = c.req.valid("param");
      await revokeGrant(c.var.deps.runtime().store, id, now(c), requestMetadata(c));
      return c.body(null, 204);
    },
  );
