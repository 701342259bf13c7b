import { AccessGranted, AccessGrantExpired, AccessGrantRevoked } from "../../events/access.ts";
import { ConflictError, NotFoundError } from "../errors.ts";
import { type EventOf, eventsOf, type NewEventOf } from "../store/catalog.ts";
import { type AnyEvent, type Decider, unreachable } from "./decider.ts";

/**
 * One grant's life, over its origin stream (`access-request-<id>`,
 * `access-share-<id>`, `break-glass-<id>`), which holds other events too:
 * only AccessGranted / AccessGrantRevoked / AccessGrantExpired of this
 * grant's id count. A grant past its `expiresAt` is expired whatever the
 * stream says (the policy enforces the clock); AccessGrantExpired records it.
 */
export type Grant =
  | { status: "none" }
  | { status: "active" | "revoked" | "expired"; patientId: string; expiresAt: string };

export type GrantCommand =
  /** The patient, a full proxy or an admin ends it now. */
  | { type: "RevokeGrant"; grantId: string; now: Date }
  /** The sweeper records the end of a grant whose time is up. */
  | { type: "ExpireGrant"; grantId: string; now: Date };

const isLifecycle = eventsOf(AccessGranted, AccessGrantRevoked, AccessGrantExpired);
type LifecycleDef = typeof AccessGranted | typeof AccessGrantRevoked | typeof AccessGrantExpired;
export type GrantEvent = EventOf<LifecycleDef>;
export type NewGrantEvent = NewEventOf<typeof AccessGrantRevoked | typeof AccessGrantExpired>;

export const evolve = (s: Grant, e: GrantEvent): Grant => {
  switch (e.type) {
    case "AccessGranted":
      return { status: "active", patientId: e.data.patientId, expiresAt: e.data.expiresAt };
    case "AccessGrantRevoked":
      return s.status === "active" ? { ...s, status: "revoked" } : s;
    case "AccessGrantExpired":
      return s.status === "active" ? { ...s, status: "expired" } : s;
    default:
      return unreachable(e, "event");
  }
};

/** Whether an active grant's time is up at `now`. */
export const pastExpiry = (s: Grant, now: Date): boolean =>
  s.status !== "none" && Date.parse(s.expiresAt) <= now.getTime();

/**
 * Revoking: 404 for a grant the stream does not hold, 409 for one that has
 * ended (revoked, swept, or past its expiry). Expiring: only an active grant
 * whose time is up, once; anything else decides nothing (the sweeper may
 * race a revocation or another sweeper).
 */
export const decide = (cmd: GrantCommand, s: Grant): NewGrantEvent[] => {
  switch (cmd.type) {
    case "RevokeGrant":
      if (s.status === "none") throw new NotFoundError("no such grant");
      if (s.status !== "active" || pastExpiry(s, cmd.now)) {
        throw new ConflictError(`the grant has already ended`);
      }
      return [{
        type: "AccessGrantRevoked",
        data: { grantId: cmd.grantId, patientId: s.patientId },
      }];
    case "ExpireGrant":
      if (s.status !== "active" || !pastExpiry(s, cmd.now)) return [];
      return [{
        type: "AccessGrantExpired",
        data: { grantId: cmd.grantId, patientId: s.patientId },
      }];
    default:
      return unreachable(cmd, "command");
  }
};

/** The decider of grant `grantId` (its stream may hold other grants' events: none today). */
export const grantDecider = (
  grantId: string,
): Decider<Grant, GrantCommand, GrantEvent, NewGrantEvent> => ({
  initialState: () => ({ status: "none" }),
  accepts: <R extends AnyEvent>(e: R): e is R & GrantEvent =>
    isLifecycle(e) && (e.data as { grantId?: string }).grantId === grantId,
  evolve,
  decide,
});
