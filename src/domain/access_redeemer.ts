import { AccessCodeFailed, AccessCodeLocked } from "../../events/access.ts";
import { MAX_WRONG_CODES, REDEEM_LOCK_MS } from "../auth/access_codes.ts";
import { type EventOf, eventsOf, type NewEventOf } from "../store/catalog.ts";
import { type AnyEvent, type Decider, foldEvents, unreachable } from "./decider.ts";

/**
 * One practitioner's failed redeems for one patient, decided over the
 * `access-redeem-<patientId>-<practitionerId>` stream: five wrong codes
 * within {@link REDEEM_LOCK_MS} block that practitioner from redeeming for
 * that patient for {@link REDEEM_LOCK_MS} (`AccessCodeLocked.until`).
 * Nobody else is blocked: the stream is theirs alone. The count and the
 * lock are one decision appended at the stream's version, so 20 concurrent
 * wrong codes lock exactly once.
 *
 * While blocked, every attempt (the right code included, which is not even
 * looked up) appends an `AccessCodeFailed` that does not count towards the
 * next lock. The window needs the time of each failure: the event carries
 * none in its payload, so the fold reads the time the store recorded.
 */

export interface Redeemer {
  /** Times (ISO) of the wrong codes since the last lock, outside any lock. */
  wrongAt: string[];
  /** ISO time; the block holds while `now` is before it. */
  lockedUntil: string | null;
  /** Failed attempts of the stream (the events' `attempt`). */
  failedAttempts: number;
}

export type RedeemerCommand = {
  type: "FailRedeem";
  patientId: string;
  practitionerId: string;
  now: Date;
};

type Defs = typeof AccessCodeFailed | typeof AccessCodeLocked;
const isRedeemerEvent = eventsOf(AccessCodeFailed, AccessCodeLocked);
/** As folded from the store, with the time it was recorded (not yet, for a decided one). */
export type RedeemerEvent = EventOf<Defs> & { recordedAt?: Date };
export type NewRedeemerEvent = NewEventOf<Defs>;

const initialState = (): Redeemer => ({ wrongAt: [], lockedUntil: null, failedAttempts: 0 });

export const isBlocked = (s: Redeemer, now: Date): boolean =>
  s.lockedUntil !== null && Date.parse(s.lockedUntil) > now.getTime();

export const evolve = (s: Redeemer, e: RedeemerEvent): Redeemer => {
  switch (e.type) {
    case "AccessCodeFailed": {
      const at = e.recordedAt;
      const counts = at !== undefined && !isBlocked(s, at);
      return {
        ...s,
        failedAttempts: e.data.attempt,
        wrongAt: counts ? [...s.wrongAt, at.toISOString()] : s.wrongAt,
      };
    }
    case "AccessCodeLocked":
      return { ...s, wrongAt: [], lockedUntil: e.data.until };
    default:
      return unreachable(e, "event");
  }
};

export const fold = (events: readonly AnyEvent[]): Redeemer =>
  foldEvents({ initialState, accepts: isRedeemerEvent, evolve }, events);

/** Pure: a failed redeem, and the block when it is the fifth wrong code in the window. */
export const decide = (cmd: RedeemerCommand, s: Redeemer): NewRedeemerEvent[] => {
  switch (cmd.type) {
    case "FailRedeem": {
      const failed: NewRedeemerEvent = {
        type: "AccessCodeFailed",
        data: {
          patientId: cmd.patientId,
          practitionerId: cmd.practitionerId,
          requestId: null,
          attempt: s.failedAttempts + 1,
        },
      };
      if (isBlocked(s, cmd.now)) return [failed];
      const since = cmd.now.getTime() - REDEEM_LOCK_MS;
      const recent = s.wrongAt.filter((t) => Date.parse(t) > since).length;
      if (recent + 1 < MAX_WRONG_CODES) return [failed];
      return [failed, {
        type: "AccessCodeLocked",
        data: {
          patientId: cmd.patientId,
          practitionerId: cmd.practitionerId,
          requestId: null,
          until: new Date(cmd.now.getTime() + REDEEM_LOCK_MS).toISOString(),
        },
      }];
    }
    default:
      return unreachable(cmd.type, "command");
  }
};

/** What a failed redeem answers: blocked (409) or a wrong code (422, the fifth included). */
export const failedRedeemOutcome = (
  after: Redeemer,
  events: readonly NewRedeemerEvent[],
  now: Date,
): "invalid" | "locked" =>
  events.some((e) => e.type === "AccessCodeLocked") || !isBlocked(after, now)
    ? "invalid"
    : "locked";

export const redeemerDecider: Decider<Redeemer, RedeemerCommand, RedeemerEvent, NewRedeemerEvent> =
  {
    initialState,
    accepts: isRedeemerEvent as Decider<Redeemer, never, RedeemerEvent>["accepts"],
    evolve,
    decide,
  };
