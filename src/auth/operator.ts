import type { EventMetadata } from "../../events/metadata.ts";
import type { Role } from "../../events/user.ts";
import { ForbiddenError, NotFoundError, ValidationError } from "../errors.ts";
import type { Runtime } from "../runtime.ts";
import { sql } from "../store/sql.ts";
import { handle } from "./accounts.ts";
import { runCredentialCommand } from "./credentials.ts";
import { runMfaCommand } from "./mfa.ts";
import { hashPassword, passwordProblem } from "./password.ts";

/**
 * What an operator does for a user from `deno task user`: lift a lock, set
 * a new password, remove a lost second factor. Each is an event that names
 * the operator (an active admin account) and carries their reason.
 */

interface Account {
  id: string;
  role: Role;
  active: boolean;
}

const byEmail = async (runtime: Runtime, email: string): Promise<Account | null> => {
  const [r] = await runtime.store.db.query<Account>(
    sql`select id::text as id, role, active from users where email = ${email.trim().toLowerCase()}`,
  );
  return r ?? null;
};

export interface OperatorAct {
  /** The account acted on. */
  email: string;
  /** The operator's own account: must be an active admin. */
  operator: string;
  reason: string;
}

/** The target and the operator of an act, and the metadata its events carry. */
const resolve = async (runtime: Runtime, act: OperatorAct) => {
  const operator = await byEmail(runtime, act.operator);
  if (!operator || operator.role !== "admin" || !operator.active) {
    throw new ForbiddenError("the operator must be the email of an active admin account");
  }
  const reason = act.reason.trim();
  if (!reason) {
    throw new ValidationError("a reason is required", [{ path: "reason", message: "empty" }]);
  }
  const user = await byEmail(runtime, act.email);
  if (!user) throw new NotFoundError("no user with that email");
  const metadata: EventMetadata = {
    actorId: operator.id,
    actorRole: "admin",
    userAgent: "chartlog-cli",
    reason,
  };
  return { user, operatorId: operator.id, reason, metadata };
};

/**
 * The metadata of an operator's own act from a `deno task` command (an
 * audit export, …): the operator must be an active admin; the reason is
 * required.
 */
export const operatorMetadata = async (
  runtime: Runtime,
  operatorEmail: string,
  reason: string,
): Promise<EventMetadata> => {
  const { metadata } = await resolve(runtime, {
    email: operatorEmail,
    operator: operatorEmail,
    reason,
  });
  return metadata;
};

/** Ends every session of the user: whoever held the old secret is out. */
const endSessions = (runtime: Runtime, user: Account, metadata: EventMetadata) =>
  runtime.sessions.logoutAll(
    { userId: user.id, role: user.role, sessionId: "", patientId: null, mfaPending: false },
    metadata,
  );

/** Lifts the lock (and clears the failures in a row); an unlocked account is a conflict. */
export const unlockAccount = async (runtime: Runtime, act: OperatorAct): Promise<void> => {
  const { user, operatorId, reason, metadata } = await resolve(runtime, act);
  await runCredentialCommand(runtime.store, {
    type: "Unlock",
    userId: user.id,
    now: runtime.sessions.now(),
    operatorId,
    reason,
  }, metadata);
};

/** Sets a new password and ends the user's sessions. */
export const resetPassword = async (
  runtime: Runtime,
  act: OperatorAct,
  password: string,
): Promise<void> => {
  const problem = passwordProblem(password);
  if (problem) throw new ValidationError("weak password", [{ path: "password", message: problem }]);
  const { user, operatorId, reason, metadata } = await resolve(runtime, act);
  const passwordHash = await hashPassword(password, runtime.passwordParams);
  await handle(runtime.store, user.id, [
    { type: "ResetPassword", passwordHash, operatorId, reason },
  ], metadata);
  await endSessions(runtime, user, metadata);
};

/**
 * Removes the user's second factor (or an enrolment in progress) and ends
 * their sessions. A role that requires one must enrol again at next login.
 */
export const resetMfa = async (runtime: Runtime, act: OperatorAct): Promise<void> => {
  const { user, operatorId, reason, metadata } = await resolve(runtime, act);
  await runMfaCommand(
    runtime.store,
    { type: "Reset", userId: user.id, operatorId, reason },
    metadata,
  );
  await endSessions(runtime, user, metadata);
};
