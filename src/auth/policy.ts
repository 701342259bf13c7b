import { type Role, ROLES } from "../../events/user.ts";

/** Who is asking: from a verified access token and the current users row. */
export interface Actor {
  userId: string;
  role: Role;
  sessionId: string;
  patientId: string | null;
  /**
   * The role must use a second factor and this user has not enrolled yet:
   * until they do, they may only enrol (and read themselves, or log out).
   */
  mfaPending: boolean;
}

/** Everything the API lets someone do, named `<resource>.<verb>`. */
export const ACTIONS = [
  "user.create",
  "user.list",
  "user.read",
  "user.update",
  "me.read",
  "me.update",
  "session.logout",
  "mfa.manage",
] as const;
export type Action = (typeof ACTIONS)[number];

const ALL: readonly Role[] = ROLES;

/**
 * The role × action matrix. The README prints it and the RBAC test walks it
 * over every route, so the three cannot drift apart. Relations to a patient
 * (care team, encounter, grant, proxy, self) refine it for patient records
 * once those exist.
 */
export const RBAC: Readonly<Record<Action, readonly Role[]>> = {
  "user.create": ["admin"],
  "user.list": ["admin"],
  "user.read": ["admin"],
  "user.update": ["admin"],
  "me.read": ALL,
  "me.update": ALL,
  "session.logout": ALL,
  "mfa.manage": ALL,
};

/** What an actor with {@link Actor.mfaPending} may still do. */
const MFA_ENROLMENT: readonly Action[] = ["me.read", "mfa.manage", "session.logout"];

/**
 * The one place that decides access. Handlers ask `can`; they never test
 * roles themselves.
 */
export const can = (actor: Actor, action: Action): boolean =>
  RBAC[action].includes(actor.role) && (!actor.mfaPending || MFA_ENROLMENT.includes(action));
