import type { Context, MiddlewareHandler } from "hono";
import type { EventMetadata } from "../../events/metadata.ts";
import { type Action, can } from "../auth/policy.ts";
import { ForbiddenError, UnauthorizedError } from "../errors.ts";
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
export const authorize = (action: Action): MiddlewareHandler<AppEnv> =>
  async function authorize(c, next) {
    const actor = c.get("actor");
    if (!actor) throw new UnauthorizedError("a bearer access token is required");
    if (!can(actor, action)) {
      await c.var.deps.runtime().store.append(`actor-${actor.userId}`, "any", [{
        type: "AccessDenied",
        data: { actorId: actor.userId, action, resourceId: c.req.param("id") ?? null },
      }], requestMetadata(c));
      throw new ForbiddenError(`not allowed: ${action}`);
    }
    await next();
  };
