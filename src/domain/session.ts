import type { AMR } from "../../events/auth.ts";
import type { NewEvent, StoredEvent } from "../store/types.ts";

/** How a session was authenticated (RFC 8176 values): password, then maybe a one-time code. */
export type Amr = (typeof AMR)[number];

/** A login session as its own stream (`session-<id>`) describes it. */
export type Session =
  | { status: "none" }
  | {
    status: "open" | "ended";
    sessionId: string;
    userId: string;
    /** Digest of the one refresh token that may be rotated next. */
    refreshDigest: string;
    /** The last login or refresh. */
    lastRefreshAt: Date;
    amr: Amr[];
  };

export type SessionCommand = {
  type: "RotateRefreshToken";
  presentedDigest: string;
  nextDigest: string;
  now: Date;
  /** The last API request seen for this session (a mark in a table, not an event). */
  lastSeenAt: Date | null;
  idleTimeoutMs: number;
  userActive: boolean;
};

/** What became of a rotation: the events to append, and whether the caller gets tokens. */
export interface Decision {
  events: NewEvent[];
  outcome: "rotated" | "reuse" | "idle" | "inactive" | "ended";
}

export const initialSession: Session = { status: "none" };

export const evolve = (
  s: Session,
  e: Pick<StoredEvent, "type" | "data" | "recordedAt">,
): Session => {
  const d = e.data as Record<string, unknown>;
  switch (e.type) {
    case "UserLoggedIn":
      return {
        status: "open",
        sessionId: d.sessionId as string,
        userId: d.userId as string,
        refreshDigest: d.refreshTokenDigest as string,
        lastRefreshAt: e.recordedAt,
        amr: (d.amr as Amr[] | undefined) ?? ["pwd"],
      };
    case "SessionRefreshed":
      return s.status === "none"
        ? s
        : { ...s, refreshDigest: d.refreshTokenDigest as string, lastRefreshAt: e.recordedAt };
    case "SessionSecondFactorVerified":
      return s.status === "none" ? s : { ...s, amr: [...new Set([...s.amr, "otp" as const])] };
    case "SessionEnded":
      return s.status === "none" ? s : { ...s, status: "ended" };
    default:
      return s;
  }
};

const end = (
  s: Extract<Session, { sessionId: string }>,
  reason: "refresh_reuse" | "idle_timeout" | "user_deactivated",
): NewEvent => ({
  type: "SessionEnded",
  data: { sessionId: s.sessionId, userId: s.userId, reason },
});

/**
 * Rotates a refresh token. Only the current token rotates; any older one of
 * the session is a copy (or the loser of a race with the owner), so the
 * whole session is revoked.
 */
export const decide = (cmd: SessionCommand, s: Session): Decision => {
  if (s.status !== "open") return { events: [], outcome: "ended" };
  if (cmd.presentedDigest !== s.refreshDigest) {
    return {
      events: [
        { type: "RefreshReuseDetected", data: { sessionId: s.sessionId, userId: s.userId } },
        end(s, "refresh_reuse"),
      ],
      outcome: "reuse",
    };
  }
  if (!cmd.userActive) return { events: [end(s, "user_deactivated")], outcome: "inactive" };
  const last = Math.max(s.lastRefreshAt.getTime(), cmd.lastSeenAt?.getTime() ?? 0);
  if (cmd.now.getTime() - last > cmd.idleTimeoutMs) {
    return { events: [end(s, "idle_timeout")], outcome: "idle" };
  }
  return {
    events: [{
      type: "SessionRefreshed",
      data: { sessionId: s.sessionId, userId: s.userId, refreshTokenDigest: cmd.nextDigest },
    }],
    outcome: "rotated",
  };
};
