import { AccessGranted, BreakGlassReviewed, BreakGlassUsed } from "../../events/access.ts";
import type { BREAK_GLASS_OUTCOMES } from "../../events/access.ts";
import { ConflictError, NotFoundError, ValidationError } from "../errors.ts";
import { type EventOf, eventsOf, type NewEventOf } from "../store/catalog.ts";
import { type Decider, unreachable } from "./decider.ts";

/** How long break-glass access lasts. */
export const BREAK_GLASS_HOURS = 1;
/** A reason must say enough for a reviewer to judge it. */
export const REASON_MIN = 20;
export const REASON_MAX = 1000;
export const NOTE_MAX = 2000;

/** One emergency access (stream `break-glass-<id>`): used, then reviewed once. */
export type BreakGlass =
  | { status: "none" }
  | { status: "used" | "reviewed"; patientId: string; grantId: string };

export type BreakGlassCommand =
  | {
    type: "UseBreakGlass";
    breakGlassId: string;
    grantId: string;
    patientId: string;
    practitionerId: string;
    reason: string;
    now: Date;
  }
  | {
    type: "ReviewBreakGlass";
    breakGlassId: string;
    outcome: (typeof BREAK_GLASS_OUTCOMES)[number];
    note: string;
  };

// AccessGranted is decided here (with the use) but changes nothing the decider tracks
const isBreakGlass = eventsOf(BreakGlassUsed, AccessGranted, BreakGlassReviewed);
export type BreakGlassEvent = EventOf<
  typeof BreakGlassUsed | typeof AccessGranted | typeof BreakGlassReviewed
>;
export type NewBreakGlassEvent = NewEventOf<
  typeof BreakGlassUsed | typeof AccessGranted | typeof BreakGlassReviewed
>;

export const evolve = (s: BreakGlass, e: BreakGlassEvent): BreakGlass => {
  switch (e.type) {
    case "BreakGlassUsed":
      return { status: "used", patientId: e.data.patientId, grantId: e.data.grantId };
    case "BreakGlassReviewed":
      return s.status === "none" ? s : { ...s, status: "reviewed" };
    case "AccessGranted":
      return s;
    default:
      return unreachable(e, "event");
  }
};

/** The reason, trimmed: 20..1000 characters, else a 422 naming `reason`. */
export const breakGlassReason = (reason: string): string => {
  const r = reason.trim();
  if (r.length < REASON_MIN || r.length > REASON_MAX) {
    throw new ValidationError("invalid reason", [{
      path: "reason",
      message: `must be ${REASON_MIN} to ${REASON_MAX} characters`,
    }]);
  }
  return r;
};

/**
 * Using break-glass opens a one-hour grant to the practitioner: the use and
 * the grant are one append. A review closes it, once (a second is a 409).
 */
export const decide = (cmd: BreakGlassCommand, s: BreakGlass): NewBreakGlassEvent[] => {
  switch (cmd.type) {
    case "UseBreakGlass": {
      if (s.status !== "none") throw new ConflictError("this break-glass was already used");
      const reason = breakGlassReason(cmd.reason);
      const expiresAt = new Date(cmd.now.getTime() + BREAK_GLASS_HOURS * 3_600_000).toISOString();
      const { breakGlassId, grantId, patientId, practitionerId } = cmd;
      return [
        {
          type: "BreakGlassUsed",
          data: { breakGlassId, grantId, patientId, practitionerId, reason, expiresAt },
        },
        {
          type: "AccessGranted",
          data: {
            grantId,
            patientId,
            granteeKind: "practitioner",
            granteeId: practitionerId,
            source: "break_glass",
            sourceId: breakGlassId,
            purpose: reason,
            expiresAt,
          },
        },
      ];
    }
    case "ReviewBreakGlass":
      if (s.status === "none") throw new NotFoundError("no such break-glass use");
      if (s.status === "reviewed") throw new ConflictError("already reviewed");
      return [{
        type: "BreakGlassReviewed",
        data: {
          breakGlassId: cmd.breakGlassId,
          patientId: s.patientId,
          outcome: cmd.outcome,
          note: cmd.note,
        },
      }];
    default:
      return unreachable(cmd, "command");
  }
};

export const breakGlassDecider: Decider<
  BreakGlass,
  BreakGlassCommand,
  BreakGlassEvent,
  NewBreakGlassEvent
> = { initialState: () => ({ status: "none" }), accepts: isBreakGlass, evolve, decide };
