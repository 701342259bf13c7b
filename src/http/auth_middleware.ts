import type { Context, MiddlewareHandler } from "hono";
import type { EventMetadata } from "../../events/metadata.ts";
import {
  type Action,
  can,
  delegation,
  mayEver,
  needsEnrolment,
  type PatientResource,
} from "../auth/policy.ts";
import { ForbiddenError, MfaEnrolmentRequiredError, UnauthorizedError } from "../errors.ts";
import type { AppEnv } from "./env.ts";
import { clientIp } from "./rate_limit.ts";

/** Audit metadata for events appended on behalf of this request. */
export const requestMetadata = (c: Context<AppEnv>): EventMetadata => {
  const actor = c.get("actor");
  const ua = c.req.header("user-agent");
  return {
    ...(actor ? { actorId: actor.userId, actorRole: actor.role } : {}),
    ip: clientIp(c, { trustProxy: c.var.deps.config.trustProxy }),
    ...(ua ? { userAgent: ua.slice(0, 500) } : {}),
    requestId: c.get("requestId"),
    ...c.get("delegation"),
  };
};

/**
 * Requires `Authorization: Bearer <access token>`: a valid token of a live
 * session of an active user. Otherwise 401.
 */
export const authenticate = (): MiddlewareHandler<AppEnv> =>
  async function authenticate(c, next) {
    const header = c.req.header("authorization") ?? "";
    const match = /^Bearer ([A-Za-z0-9_.-]+)$/.exec(header);
    if (!match) throw new UnauthorizedError("a bearer access token is required");
    c.set("actor", await c.var.deps.runtime().sessions.authenticate(match[1]!));
    await next();
  };

/**
 * Asks the policy whether the actor may perform `action`. A refusal is a 403
 * and an `AccessDenied` event (actor, action, resource id; never PHI).
 */
export const authorize = (
  action: Action | ((c: Context<AppEnv>) => Action),
  resource?: (c: Context<AppEnv>) => Promise<PatientResource | undefined>,
): MiddlewareHandler<AppEnv> =>
  async function authorize(c, next) {
    const actor = c.get("actor");
    if (!actor) throw new UnauthorizedError("a bearer access token is required");
    const act = typeof action === "function" ? action(c) : action;
    if (!(await allowed(c, act, resource))) await deny(c, act);
    await next();
  };

/**
 * The role gate of a route whose patient comes in the body: a role whose
 * cell is "no" is refused (403 and `AccessDenied`) before the body is
 * validated; the handler asks for the relation once it knows the patient
 * (`allowed` with the resource, then `deny`).
 */
export const authorizeRole = (action: Action): MiddlewareHandler<AppEnv> =>
  async function authorizeRole(c, next) {
    const actor = c.get("actor");
    if (!actor) throw new UnauthorizedError("a bearer access token is required");
    if (!mayEver(actor, action)) await deny(c, action);
    await next();
  };

/**
 * Whether the actor may perform `action` (on the resource, when given).
 * Also usable inside a handler for a second, conditional check.
 */
export const allowed = async (
  c: Context<AppEnv>,
  action: Action,
  resource?: (c: Context<AppEnv>) => Promise<PatientResource | undefined>,
): Promise<boolean> => {
  const actor = c.get("actor")!;
  const res = resource ? await resource(c) : undefined;
  const ok = can(actor, action, res);
  // the first decision that let the actor reach the patient says what it stood on
  if (ok && res && !c.get("delegation")) c.set("delegation", delegation(actor, action, res));
  return ok;
};

/**
 * Refuses with 403 and an `AccessDenied` event, as `authorize` does. The
 * resource is the path's id unless given (a patient named in the body).
 */
export const deny = async (
  c: Context<AppEnv>,
  action: Action,
  resourceId: string | null = c.req.param("id") ?? null,
): Promise<never> => {
  const actor = c.get("actor")!;
  // a refusal was not done through any grant the request may otherwise hold
  const { grantId: _g, onBehalfOf: _o, ...metadata } = requestMetadata(c);
  await c.var.deps.runtime().store.append(`actor-${actor.userId}`, "any", [{
    type: "AccessDenied",
    data: { actorId: actor.userId, action, resourceId },
  }], metadata);
  if (needsEnrolment(actor, action)) {
    throw new MfaEnrolmentRequiredError(
      `your role requires two-factor authentication: enrol with POST /v1/me/mfa/totp, ` +
        `confirm with POST /v1/me/mfa/totp/confirm, then log in again with the code ` +
        `(not allowed until then: ${action})`,
    );
  }
  throw new ForbiddenError(`not allowed: ${action}`);
};
