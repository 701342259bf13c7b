import { ConflictError } from "../errors.ts";
import type { NewEvent, StoredEvent } from "../store/types.ts";

/**
 * The account's credential checks, decided over its `auth-<userId>` stream:
 * failed attempts in a row, the lock they lead to, and what ends them. The
 * count and the lock are one decision appended at the stream's version, so
 * concurrent attempts cannot all read "four failures" and all pass (the loser
 * of the append re-reads and decides again).
 */

/** Failed attempts in a row that lock an account, and for how long. */
export const LOCKOUT_FAILURES = 5;
export const LOCKOUT_MS = 15 * 60_000;

/** Failure reasons that count towards the lock: a wrong secret, wherever it was typed. */
export const COUNTED_FAILURES: readonly string[] = [
  "bad_password",
  "bad_mfa_code",
  "wrong_current_password",
];

export interface Credentials {
  consecutiveFailures: number;
  /** ISO time; the lock holds while `now` is before it. */
  lockedUntil: string | null;
}

export const initial = (): Credentials => ({ consecutiveFailures: 0, lockedUntil: null });

/** The second factor of a login attempt, as checked before deciding. */
export type SecondFactor =
  /** The account has no second factor. */
  | "not_enrolled"
  /** Enrolled, but no code came with the attempt. */
  | "missing"
  /** A wrong, expired or already used code. */
  | "invalid"
  /** An acceptable code: the `MfaVerified` event that records it. */
  | { verified: NewEvent };

export type CredentialCommand =
  | {
    type: "AttemptLogin";
    userId: string;
    sessionId: string;
    now: Date;
    passwordOk: boolean;
    account: "active" | "pending" | "inactive";
    secondFactor: SecondFactor;
  }
  | { type: "CheckCurrentPassword"; userId: string; now: Date; passwordOk: boolean }
  | { type: "Unlock"; userId: string; now: Date; operatorId: string; reason: string };

const assertNever = (x: never): never => {
  throw new Error(`unhandled command ${JSON.stringify(x)}`);
};

export const evolve = (s: Credentials, e: Pick<StoredEvent, "type" | "data">): Credentials => {
  const d = e.data as Record<string, unknown>;
  switch (e.type) {
    case "LoginFailed":
      return COUNTED_FAILURES.includes(d.reason as string)
        ? { ...s, consecutiveFailures: s.consecutiveFailures + 1 }
        : s;
    case "AccountLocked":
      return { consecutiveFailures: 0, lockedUntil: d.until as string };
    case "LoginSucceeded":
    case "AccountUnlocked":
      return initial();
    default:
      return s;
  }
};

export const fold = (events: readonly Pick<StoredEvent, "type" | "data">[]): Credentials =>
  events.reduce(evolve, initial());

export const isLocked = (s: Credentials, now: Date): boolean =>
  s.lockedUntil !== null && Date.parse(s.lockedUntil) > now.getTime();

type FailureReason =
  | "bad_password"
  | "bad_mfa_code"
  | "wrong_current_password"
  | "locked"
  | "pending_approval"
  | "inactive"
  | "mfa_required";

const failed = (userId: string, reason: FailureReason): NewEvent => ({
  type: "LoginFailed",
  data: { userId, reason },
});

/** A counted failure, and the lock when it is the one that reaches the limit. */
const countFailure = (
  s: Credentials,
  userId: string,
  reason: FailureReason,
  now: Date,
): NewEvent[] => {
  const failures = s.consecutiveFailures + 1;
  if (failures < LOCKOUT_FAILURES) return [failed(userId, reason)];
  return [failed(userId, reason), {
    type: "AccountLocked",
    data: { userId, until: new Date(now.getTime() + LOCKOUT_MS).toISOString(), failures },
  }];
};

/**
 * Decides a credential check. Pure: the password and the second factor were
 * checked before (the command says how), `now` comes in the command. A
 * locked account refuses even the right password, before anything else is
 * looked at, so a guess made during the lock teaches nothing.
 */
export const decide = (cmd: CredentialCommand, s: Credentials): NewEvent[] => {
  switch (cmd.type) {
    case "AttemptLogin": {
      const { userId } = cmd;
      if (isLocked(s, cmd.now)) return [failed(userId, "locked")];
      if (!cmd.passwordOk) return countFailure(s, userId, "bad_password", cmd.now);
      if (cmd.account === "pending") return [failed(userId, "pending_approval")];
      if (cmd.account === "inactive") return [failed(userId, "inactive")];
      if (cmd.secondFactor === "missing") return [failed(userId, "mfa_required")];
      if (cmd.secondFactor === "invalid") return countFailure(s, userId, "bad_mfa_code", cmd.now);
      const succeeded = { type: "LoginSucceeded", data: { userId, sessionId: cmd.sessionId } };
      return cmd.secondFactor === "not_enrolled"
        ? [succeeded]
        : [cmd.secondFactor.verified, succeeded];
    }
    case "CheckCurrentPassword":
      if (isLocked(s, cmd.now)) return [failed(cmd.userId, "locked")];
      if (!cmd.passwordOk) return countFailure(s, cmd.userId, "wrong_current_password", cmd.now);
      return [];
    case "Unlock":
      if (!isLocked(s, cmd.now) && s.consecutiveFailures === 0) {
        throw new ConflictError("the account is not locked");
      }
      return [{
        type: "AccountUnlocked",
        data: { userId: cmd.userId, operatorId: cmd.operatorId, reason: cmd.reason },
      }];
    default:
      return assertNever(cmd);
  }
};

/** Why a decided attempt was refused, or null when it passed. */
export const refusal = (events: readonly NewEvent[]): FailureReason | null => {
  const f = events.find((e) => e.type === "LoginFailed");
  return f ? (f.data as { reason: FailureReason }).reason : null;
};
