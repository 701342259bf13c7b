import {
  AccountLocked,
  AccountUnlocked,
  type LOGIN_FAILURE_REASONS,
  LoginFailed,
  LoginSucceeded,
  MfaVerified,
} from "../../events/auth.ts";
import { ConflictError } from "../errors.ts";
import { type EventOf, eventsOf, type NewEventOf } from "../store/catalog.ts";
import { type AnyEvent, type Decider, foldEvents, unreachable } from "./decider.ts";

/**
 * The account's credential checks, decided over its `auth-<userId>` stream:
 * failed attempts in a row, the lock they lead to, and what ends them. The
 * count and the lock are one decision appended at the stream's version, so
 * concurrent attempts cannot all read "four failures" and all pass (the loser
 * of the append re-reads and decides again).
 */

type LoginFailureReason = (typeof LOGIN_FAILURE_REASONS)[number];

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
  | { verified: NewEventOf<typeof MfaVerified> };

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

type CredentialDefs =
  | typeof LoginFailed
  | typeof AccountLocked
  | typeof LoginSucceeded
  | typeof AccountUnlocked
  | typeof MfaVerified;
const isCredentialEvent = eventsOf(
  LoginFailed,
  AccountLocked,
  LoginSucceeded,
  AccountUnlocked,
  MfaVerified,
);
export type CredentialEvent = EventOf<CredentialDefs>;
export type NewCredentialEvent = NewEventOf<CredentialDefs>;

export const evolve = (s: Credentials, e: CredentialEvent): Credentials => {
  switch (e.type) {
    case "LoginFailed":
      return COUNTED_FAILURES.includes(e.data.reason)
        ? { ...s, consecutiveFailures: s.consecutiveFailures + 1 }
        : s;
    case "AccountLocked":
      return { consecutiveFailures: 0, lockedUntil: e.data.until };
    case "LoginSucceeded":
    case "AccountUnlocked":
      return initial();
    case "MfaVerified": // recorded with a success; the success ends the run
      return s;
    default:
      return unreachable(e, "event");
  }
};

export const fold = (events: readonly AnyEvent[]): Credentials =>
  foldEvents({ initialState: initial, accepts: isCredentialEvent, evolve }, events);

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

const failed = (userId: string, reason: FailureReason): NewCredentialEvent => ({
  type: "LoginFailed",
  data: { userId, reason },
});

/** A counted failure, and the lock when it is the one that reaches the limit. */
const countFailure = (
  s: Credentials,
  userId: string,
  reason: FailureReason,
  now: Date,
): NewCredentialEvent[] => {
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
export const decide = (cmd: CredentialCommand, s: Credentials): NewCredentialEvent[] => {
  switch (cmd.type) {
    case "AttemptLogin": {
      const { userId } = cmd;
      if (isLocked(s, cmd.now)) return [failed(userId, "locked")];
      if (!cmd.passwordOk) return countFailure(s, userId, "bad_password", cmd.now);
      if (cmd.account === "pending") return [failed(userId, "pending_approval")];
      if (cmd.account === "inactive") return [failed(userId, "inactive")];
      if (cmd.secondFactor === "missing") return [failed(userId, "mfa_required")];
      if (cmd.secondFactor === "invalid") return countFailure(s, userId, "bad_mfa_code", cmd.now);
      const succeeded: NewCredentialEvent = {
        type: "LoginSucceeded",
        data: { userId, sessionId: cmd.sessionId },
      };
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
      return unreachable(cmd, "command");
  }
};

/** Why a decided attempt was refused, or null when it passed. */
export const refusal = (events: readonly NewCredentialEvent[]): LoginFailureReason | null => {
  for (const e of events) if (e.type === "LoginFailed") return e.data.reason;
  return null;
};

export const credentialsDecider: Decider<
  Credentials,
  CredentialCommand,
  CredentialEvent,
  NewCredentialEvent
> = { initialState: initial, accepts: isCredentialEvent, evolve, decide };
