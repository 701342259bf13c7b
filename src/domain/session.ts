import {
  type AMR,
  RefreshReuseDetected,
  SessionEnded,
  SessionRefreshed,
  SessionSecondFactorVerified,
  UserLoggedIn,
} from "../../events/auth.ts";
import { ConflictError } from "../errors.ts";
import { type EventOf, eventsOf, type NewEventOf } from "../store/catalog.ts";
import { type AnyEvent, type Decider, foldEvents, unreachable } from "./decider.ts";

/** How a session was authenticated (RFC 8176 values): password, then maybe a one-time code. */
export type Amr = (typeof AMR)[number];

/** A login session as its own stream (`session-<id>`) describes it. */
export type Session =
  | { status: "none" }
  | {
    status: "open" | "ended";
    sessionId: string;
    userId: string;
    /** Digest of the one refresh token that may be rotated next (null once erased). */
    refreshDigest: string | null;
    /** The last login or refresh (null: decided, not yet recorded). */
    lastRefreshAt: Date | null;
    amr: Amr[];
  };

export type SessionCommand =
  | {
    type: "StartSession";
    sessionId: string;
    userId: string;
    refreshTokenDigest: string;
    amr: Amr[];
  }
  | {
    type: "RotateRefreshToken";
    presentedDigest: string;
    nextDigest: string;
    now: Date;
    /** The last API request seen for this session (a mark in a table, not an event). */
    lastSeenAt: Date | null;
    idleTimeoutMs: number;
    userActive: boolean;
  }
  /** The session's user presented a second factor from within it. */
  | { type: "VerifySecondFactor" }
  | { type: "EndSession"; reason: "logout" | "logout_all" | "user_deactivated" };

type SessionDefs =
  | typeof UserLoggedIn
  | typeof SessionRefreshed
  | typeof SessionSecondFactorVerified
  | typeof RefreshReuseDetected
  | typeof SessionEnded;
const isSessionEvent = eventsOf(
  UserLoggedIn,
  SessionRefreshed,
  SessionSecondFactorVerified,
  RefreshReuseDetected,
  SessionEnded,
);
/** A session event; as read back it carries the time it was recorded. */
export type SessionEvent = EventOf<SessionDefs> & { readonly recordedAt?: Date };
export type NewSessionEvent = NewEventOf<SessionDefs>;

/** What became of a rotation, told by the events decided. */
export type RefreshOutcome = "rotated" | "reuse" | "idle" | "inactive" | "ended";

export const initialSession: Session = { status: "none" };
const initialState = (): Session => initialSession;

export const evolve = (s: Session, e: SessionEvent): Session => {
  switch (e.type) {
    case "UserLoggedIn":
      return {
        status: "open",
        sessionId: e.data.sessionId,
        userId: e.data.userId,
        refreshDigest: e.data.refreshTokenDigest,
        lastRefreshAt: e.recordedAt ?? null,
        amr: e.data.amr,
      };
    case "SessionRefreshed":
      return s.status === "none"
        ? s
        : { ...s, refreshDigest: e.data.refreshTokenDigest, lastRefreshAt: e.recordedAt ?? null };
    case "SessionSecondFactorVerified":
      return s.status === "none" ? s : { ...s, amr: [...new Set([...s.amr, "otp" as const])] };
    case "SessionEnded":
      return s.status === "none" ? s : { ...s, status: "ended" };
    case "RefreshReuseDetected":
      return s;
    default:
      return unreachable(e, "event");
  }
};

export const fold = (events: readonly (AnyEvent & { recordedAt?: Date })[]): Session =>
  foldEvents({ initialState, accepts: isSessionEvent, evolve }, events);

const end = (
  s: Extract<Session, { sessionId: string }>,
  reason: "refresh_reuse" | "idle_timeout" | "user_deactivated" | "logout" | "logout_all",
): NewSessionEvent => ({
  type: "SessionEnded",
  data: { sessionId: s.sessionId, userId: s.userId, reason },
});

/**
 * Rotates a refresh token. Only the current token rotates; any older one of
 * the session is a copy (or the loser of a race with the owner), so the
 * whole session is revoked.
 */
const rotate = (
  cmd: Extract<SessionCommand, { type: "RotateRefreshToken" }>,
  s: Extract<Session, { sessionId: string }>,
): NewSessionEvent[] => {
  if (cmd.presentedDigest !== s.refreshDigest) {
    return [
      { type: "RefreshReuseDetected", data: { sessionId: s.sessionId, userId: s.userId } },
      end(s, "refresh_reuse"),
    ];
  }
  if (!cmd.userActive) return [end(s, "user_deactivated")];
  const last = Math.max(s.lastRefreshAt?.getTime() ?? 0, cmd.lastSeenAt?.getTime() ?? 0);
  if (cmd.now.getTime() - last > cmd.idleTimeoutMs) return [end(s, "idle_timeout")];
  return [{
    type: "SessionRefreshed",
    data: { sessionId: s.sessionId, userId: s.userId, refreshTokenDigest: cmd.nextDigest },
  }];
};

/** Pure: the events a command produces on a session; an ended session changes no more. */
export const decide = (cmd: SessionCommand, s: Session): NewSessionEvent[] => {
  switch (cmd.type) {
    case "StartSession": {
      if (s.status !== "none") throw new ConflictError("session exists");
      const { type: _t, ...data } = cmd;
      return [{ type: "UserLoggedIn", data }];
    }
    case "RotateRefreshToken":
      return s.status === "open" ? rotate(cmd, s) : [];
    case "VerifySecondFactor":
      return s.status === "open" && !s.amr.includes("otp")
        ? [{
          type: "SessionSecondFactorVerified",
          data: { sessionId: s.sessionId, userId: s.userId },
        }]
        : [];
    case "EndSession":
      return s.status === "open" ? [end(s, cmd.reason)] : [];
    default:
      return unreachable(cmd, "command");
  }
};

/** What a rotation's decided events mean for the caller. */
export const refreshOutcome = (events: readonly NewSessionEvent[]): RefreshOutcome => {
  for (const e of events) {
    switch (e.type) {
      case "SessionRefreshed":
        return "rotated";
      case "RefreshReuseDetected":
        return "reuse";
      case "SessionEnded":
        return e.data.reason === "idle_timeout" ? "idle" : "inactive";
      case "UserLoggedIn":
      case "SessionSecondFactorVerified":
        break;
      default:
        unreachable(e, "event");
    }
  }
  return "ended";
};

export const sessionDecider: Decider<Session, SessionCommand, SessionEvent, NewSessionEvent> = {
  initialState,
  accepts: isSessionEvent,
  evolve,
  decide,
};
