import { createRoute, OpenAPIHono, z } from "@hono/zod-openapi";
import type { Context } from "hono";
import { GRANT_SOURCES, GRANTEE_KINDS } from "../../events/access.ts";
import {
  clinicStanding,
  listPendingRequests,
  requestAccess,
  requireCodePatient,
  verifyAccessRequest,
} from "../clinical/access_requests.ts";
import { redeemCode, shareCode } from "../clinical/access_shares.ts";
import { NotFoundError } from "../errors.ts";
import {
  allowed,
  authenticate,
  authorize,
  authorizeRole,
  deny,
  requestMetadata,
} from "./auth_middleware.ts";
import type { AppEnv } from "./env.ts";
import { resourceOf } from "./patient_scope.ts";
import { problemResponses } from "./problem.ts";
import { bearer, json } from "./route_kit.ts";

/**
 * Delegated access through one-time codes (README "Delegated access"): a
 * practitioner asks and the patient confirms (request → verify), or the
 * patient shares first (share → redeem). The code is never logged and never
 * in an error; it is in an answer only once, to the patient who shares it.
 */

const noNul = (s: string) => !s.includes("\0");
const Purpose = z.string().trim().min(1).max(500).refine(noNul, "must not contain NUL characters")
  .openapi({ description: "why access is needed (sealed as the patient's PHI)" });
const DurationHours = z.number().int().min(1).max(72).default(24)
  .openapi({ description: "how long the grant lasts once the code is confirmed (hours)" });
const Code = z.string().regex(/^\d{6}$/, "6 digits").openapi({ example: "042917" });

const RequestBody = z.strictObject({
  purpose: Purpose,
  durationHours: DurationHours,
  clinicId: z.uuid().nullable().optional().openapi({
    description: "ask for the clinic (you must be an active member of an active clinic): the " +
      "grant goes to the clinic",
  }),
}).openapi("AccessRequestCreate");

const AccessRequestSchema = z.object({
  id: z.uuid(),
  patientId: z.uuid(),
  clinicId: z.uuid().nullable(),
  status: z.literal("pending"),
  expiresAt: z.string().openapi({ description: "when the code stops working (10 minutes)" }),
  durationHours: z.number().int(),
}).openapi("AccessRequest");

const GrantSchema = z.object({
  id: z.uuid(),
  patientId: z.uuid(),
  granteeKind: z.enum(GRANTEE_KINDS),
  granteeId: z.uuid(),
  source: z.enum(GRANT_SOURCES),
  sourceId: z.uuid(),
  purpose: z.string(),
  status: z.literal("active"),
  expiresAt: z.string(),
}).openapi("AccessGrant");

export const PendingRequest = z.object({
  id: z.uuid(),
  patientId: z.uuid(),
  clinicId: z.uuid().nullable(),
  status: z.literal("pending"),
  failedAttempts: z.number().int(),
  createdAt: z.string(),
  expiresAt: z.string(),
}).openapi("PendingAccessRequest");

const ONE_GRANTEE = "name exactly one of practitionerId and clinicId";
/** Exactly one grantee (anything but an object is the object schema's to refuse). */
const namesOne = (b: unknown) => {
  if (typeof b !== "object" || b === null) return true;
  const r = b as Record<string, unknown>;
  return [r.practitionerId, r.clinicId].filter((x) => x !== undefined && x !== null).length === 1;
};

const ShareBody = z.strictObject({
  patientId: z.uuid(),
  practitionerId: z.uuid().optional(),
  clinicId: z.uuid().optional(),
  purpose: Purpose,
  durationHours: DurationHours,
})
  // `when`: checked even when other fields fail, so that one 422 names every bad field
  .refine(namesOne, { path: ["practitionerId"], message: ONE_GRANTEE, when: () => true })
  .refine(namesOne, { path: ["clinicId"], message: ONE_GRANTEE, when: () => true })
  .openapi("AccessCodeShare", { description: "exactly one of practitionerId and clinicId" });

const SharedCode = z.object({
  id: z.uuid(),
  patientId: z.uuid(),
  practitionerId: z.uuid().nullable(),
  clinicId: z.uuid().nullable(),
  durationHours: z.number().int(),
  expiresAt: z.string(),
  code: Code.openapi({ description: "shown this once; give it to the practitioner" }),
}).openapi("SharedAccessCode");

const RedeemBody = z.strictObject({ patientId: z.uuid(), code: Code })
  .openapi("AccessCodeRedeem");

const CODE_PROBLEMS_TEXT = "A wrong code is 422 `/problems/invalid-code`; a dead request or a " +
  "blocked redeemer 409 `/problems/code-locked`; a used code 409 `/problems/code-used`; an " +
  "expired one 410 `/problems/code-expired`. Every attempt is an event.";

const deps = (c: Context<AppEnv>) => {
  const r = c.var.deps.runtime();
  return { store: r.store, accessCodeKey: r.accessCodeKey, now: r.sessions.now() };
};

/** `POST /v1/patients/:id/access-requests` (mounted under `/v1/patients`). */
export const patientAccessRequests = new OpenAPIHono<AppEnv>().openapi(
  createRoute({
    method: "post",
    path: "/{id}/access-requests",
    tags: ["access"],
    summary: "Ask for access to a patient's record (a code goes to the patient)",
    description: "No relation to the patient is needed. Creates a 6-digit code, valid for 10 " +
      "minutes, delivered to the patient; the answer never holds it. With `clinicId` you must " +
      "be an active member of that active clinic (403 `/problems/forbidden` and an " +
      "`AccessDenied` otherwise; 404 for an unknown clinic), and the grant goes to the clinic. " +
      "An unknown or deleted patient is 404, an erased one 410.",
    security: bearer,
    middleware: [authenticate(), authorize("access.request")] as const,
    request: {
      params: z.object({ id: z.uuid() }),
      body: { required: true, content: json(RequestBody) },
    },
    responses: {
      201: { description: "requested", content: json(AccessRequestSchema) },
      ...problemResponses("unauthorized", "forbidden", "not-found", "validation", "erased"),
    },
  }),
  async (c) => {
    const { store, accessCodeKey, now } = deps(c);
    const actor = c.get("actor")!;
    const patientId = c.req.valid("param").id;
    const body = c.req.valid("json");
    await requireCodePatient(store, patientId);
    if (body.clinicId) {
      const standing = await clinicStanding(store, body.clinicId, actor.userId);
      if (standing === "none") throw new NotFoundError("no such clinic");
      if (standing === "not_member") await deny(c, "access.request");
    }
    const r = await requestAccess(
      { store, accessCodeKey },
      actor,
      {
        patientId,
        purpose: body.purpose,
        durationHours: body.durationHours,
        clinicId: body.clinicId ?? null,
      },
      now,
      requestMetadata(c),
    );
    c.header("Cache-Control", "no-store");
    return c.json(r, 201);
  },
);

/** `POST /v1/access-requests/:id/verify` (mounted under `/v1/access-requests`). */
export const accessRequests = new OpenAPIHono<AppEnv>().openapi(
  createRoute({
    method: "post",
    path: "/{id}/verify",
    tags: ["access"],
    summary: "Confirm an access request with the patient's code: a grant",
    description: "Only the practitioner who asked (anyone else: 404). The right code within 10 " +
      "minutes grants access for the request's `durationHours` (to the practitioner, or to " +
      "the clinic asked for). Five wrong codes kill the request: every later attempt, the " +
      "right code included, is 409. " + CODE_PROBLEMS_TEXT,
    security: bearer,
    middleware: [authenticate(), authorize("access.verify")] as const,
    request: {
      params: z.object({ id: z.uuid() }),
      body: { required: true, content: json(z.strictObject({ code: Code })) },
    },
    responses: {
      201: { description: "granted", content: json(GrantSchema) },
      ...problemResponses(
        "unauthorized",
        "forbidden",
        "not-found",
        "validation",
        "code-locked",
        "code-expired",
      ),
    },
  }),
  async (c) => {
    const { store, accessCodeKey, now } = deps(c);
    const grant = await verifyAccessRequest(
      { store, accessCodeKey },
      c.get("actor")!,
      c.req.valid("param").id,
      c.req.valid("json").code,
      now,
      requestMetadata(c),
    );
    c.header("Cache-Control", "no-store");
    return c.json(grant, 201);
  },
);

/** The actor's own codes (mounted under `/v1/me`). */
export const meAccess = new OpenAPIHono<AppEnv>()
  .openapi(
    createRoute({
      method: "get",
      path: "/access-requests",
      tags: ["access"],
      summary: "Your pending access requests (practitioner)",
      description: "Requests whose code is still waiting: neither verified, locked nor past " +
        "its 10 minutes. Newest first. No purpose and no code.",
      security: bearer,
      middleware: [authenticate(), authorize("access.requests_own")] as const,
      request: {
        query: z.object({
          limit: z.coerce.number().int().min(1).max(100).default(50),
          cursor: z.string().max(500).optional(),
        }),
      },
      responses: {
        200: {
          description: "a page of pending requests",
          content: json(z.object({
            items: z.array(PendingRequest),
            nextCursor: z.string().nullable(),
            total: z.number().int(),
          })),
        },
        ...problemResponses("unauthorized", "forbidden", "validation"),
      },
    }),
    async (c) => {
      const { store, now } = deps(c);
      const page = await listPendingRequests(
        store,
        c.get("actor")!.userId,
        now,
        c.req.valid("query"),
      );
      c.header("Cache-Control", "no-store");
      return c.json(page, 200);
    },
  )
  .openapi(
    createRoute({
      method: "post",
      path: "/access-codes",
      tags: ["access"],
      summary: "Share a code for your record with a practitioner or a clinic (patient)",
      description: "The patient themselves or a full proxy (a read-only proxy: 403). Exactly " +
        "one of `practitionerId` (an active practitioner) and `clinicId` (an active clinic); " +
        "an unknown one is 404. The code is in this answer once, valid for 10 minutes; only " +
        "its keyed digest is kept.",
      security: bearer,
      middleware: [authenticate(), authorizeRole("access.share")] as const,
      request: { body: { required: true, content: json(ShareBody) } },
      responses: {
        201: { description: "shared", content: json(SharedCode) },
        ...problemResponses("unauthorized", "forbidden", "not-found", "validation", "erased"),
      },
    }),
    async (c) => {
      const { store, accessCodeKey, now } = deps(c);
      const body = c.req.valid("json");
      // the patient is known only now: the relation (self or full proxy) is asked for here
      if (!(await allowed(c, "access.share", (c) => resourceOf(c, body.patientId)))) {
        await deny(c, "access.share", body.patientId);
      }
      const shared = await shareCode(
        { store, accessCodeKey },
        {
          patientId: body.patientId,
          practitionerId: body.practitionerId ?? null,
          clinicId: body.clinicId ?? null,
          purpose: body.purpose,
          durationHours: body.durationHours,
        },
        now,
        requestMetadata(c),
      );
      c.header("Cache-Control", "no-store");
      return c.json(shared, 201);
    },
  );

/** `POST /v1/access-codes/redeem` (mounted under `/v1/access-codes`). */
export const accessCodes = new OpenAPIHono<AppEnv>().openapi(
  createRoute({
    method: "post",
    path: "/redeem",
    tags: ["access"],
    summary: "Redeem a code a patient shared: a grant",
    description: "By the practitioner the code names, or an active member of the clinic it " +
      "names (for anyone else it is a wrong code). Five wrong codes within 15 minutes block " +
      "you from redeeming for that patient for 15 minutes (409, the right code included); " +
      "nobody else is blocked. " + CODE_PROBLEMS_TEXT,
    security: bearer,
    middleware: [authenticate(), authorize("access.redeem")] as const,
    request: { body: { required: true, content: json(RedeemBody) } },
    responses: {
      201: { description: "granted", content: json(GrantSchema) },
      ...problemResponses(
        "unauthorized",
        "forbidden",
        "not-found",
        "validation",
        "code-locked",
        "code-expired",
      ),
    },
  }),
  async (c) => {
    const { store, accessCodeKey, now } = deps(c);
    const grant = await redeemCode(
      { store, accessCodeKey },
      c.get("actor")!,
      c.req.valid("json"),
      now,
      requestMetadata(c),
    );
    c.header("Cache-Control", "no-store");
    return c.json(grant, 201);
  },
);
