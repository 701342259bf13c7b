import {
  AccessCodeExpired,
  AccessCodeFailed,
  AccessCodeLocked,
  AccessCodeVerified,
  AccessGranted,
  AccessRequested,
} from "../../events/access.ts";
import { CODE_TTL_MS, digestsEqual, MAX_WRONG_CODES } from "../auth/access_codes.ts";
import { NotFoundError } from "../errors.ts";
import { type EventOf, eventsOf, type NewEventOf } from "../store/catalog.ts";
import { type AnyEvent, type Decider, foldEvents, unreachable } from "./decider.ts";

/**
 * A practitioner's request for access to a patient's record, decided over
 * its `access-request-<requestId>` stream: the code the patient receives,
 * the attempts to verify it, and the grant it turns into. The count of wrong
 * codes and the lock are decided from the stream and appended at its
 * version, so 20 concurrent wrong codes cannot all read "four so far".
 *
 * Every attempt is an event. A pending request answers a wrong code with
 * `AccessCodeFailed` (the fifth also with `AccessCodeLocked`), a late one
 * with `AccessCodeFailed` + `AccessCodeExpired`, the right one with
 * `AccessCodeVerified` + `AccessGranted`. Once the request is dead (locked,
 * expired) or used, every attempt is an `AccessCodeFailed` and nothing else:
 * the code is not even compared, so a guess made then teaches nothing.
 * `attempt` counts the failed attempts of the stream.
 */

export type RequestStatus = "pending" | "verified" | "locked" | "expired";

export type AccessRequest =
  | { status: "none" }
  | {
    status: RequestStatus;
    requestId: string;
    patientId: string;
    practitionerId: string;
    clinicId: string | null;
    purpose: string | null;
    durationHours: number;
    codeDigest: string;
    expiresAt: string;
    /** Wrong codes while pending (what the lock counts). */
    wrongCodes: number;
    /** Failed attempts of any kind (the events' `attempt`). */
    failedAttempts: number;
    grantId: string | null;
  };

export type AccessRequestCommand =
  | {
    type: "RequestAccess";
    requestId: string;
    patientId: string;
    practitionerId: string;
    clinicId: string | null;
    purpose: string;
    durationHours: number;
    code: string;
    codeDigest: string;
    now: Date;
  }
  | {
    type: "VerifyCode";
    practitionerId: string;
    /** The digest of the code presented, bound to this request and its patient. */
    candidateDigest: string;
    grantId: string;
    now: Date;
  };

type Defs =
  | typeof AccessRequested
  | typeof AccessCodeFailed
  | typeof AccessCodeLocked
  | typeof AccessCodeExpired
  | typeof AccessCodeVerified
  | typeof AccessGranted;
const isRequestEvent = eventsOf(
  AccessRequested,
  AccessCodeFailed,
  AccessCodeLocked,
  AccessCodeExpired,
  AccessCodeVerified,
  AccessGranted,
);
export type AccessRequestEvent = EventOf<Defs>;
export type NewAccessRequestEvent = NewEventOf<Defs>;

const initialState = (): AccessRequest => ({ status: "none" });

export const evolve = (s: AccessRequest, e: AccessRequestEvent): AccessRequest => {
  if (e.type === "AccessRequested") {
    const d = e.data;
    return {
      status: "pending",
      requestId: d.requestId,
      patientId: d.patientId,
      practitionerId: d.practitionerId,
      clinicId: d.clinicId,
      purpose: d.purpose,
      durationHours: d.durationHours,
      codeDigest: d.codeDigest,
      expiresAt: d.expiresAt,
      wrongCodes: 0,
      failedAttempts: 0,
      grantId: null,
    };
  }
  if (s.status === "none") return s;
  switch (e.type) {
    case "AccessCodeFailed":
      return {
        ...s,
        failedAttempts: e.data.attempt,
        wrongCodes: s.status === "pending" ? s.wrongCodes + 1 : s.wrongCodes,
      };
    case "AccessCodeLocked":
      return { ...s, status: "locked" };
    case "AccessCodeExpired":
      return { ...s, status: "expired" };
    case "AccessCodeVerified":
      return { ...s, status: "verified", grantId: e.data.grantId };
    case "AccessGranted":
      return s;
    default:
      return unreachable(e, "event");
  }
};

export const fold = (events: readonly AnyEvent[]): AccessRequest =>
  foldEvents({ initialState, accepts: isRequestEvent, evolve }, events);

/** Whether a pending request's code is past its 10 minutes at `now`. */
export const isPastExpiry = (expiresAt: string, now: Date): boolean =>
  Date.parse(expiresAt) <= now.getTime();

/**
 * Pure: the events a command produces. `VerifyCode` by anyone but the
 * requesting practitioner is a 404 (the request is theirs alone); every
 * other attempt appends something (see the module comment). Which answer an
 * attempt gets follows from what was appended: {@link verifyOutcome}.
 */
export const decide = (
  cmd: AccessRequestCommand,
  s: AccessRequest,
): NewAccessRequestEvent[] => {
  switch (cmd.type) {
    case "RequestAccess": {
      if (s.status !== "none") return []; // the same request id twice: already there
      const { type: _t, now, ...d } = cmd;
      return [{
        type: "AccessRequested",
        data: { ...d, expiresAt: new Date(now.getTime() + CODE_TTL_MS).toISOString() },
      }];
    }
    case "VerifyCode": {
      if (s.status === "none" || s.practitionerId !== cmd.practitionerId) {
        throw new NotFoundError("no such access request");
      }
      const failed: NewAccessRequestEvent = {
        type: "AccessCodeFailed",
        data: {
          patientId: s.patientId,
          practitionerId: cmd.practitionerId,
          requestId: s.requestId,
          attempt: s.failedAttempts + 1,
        },
      };
      if (s.status !== "pending") return [failed];
      if (isPastExpiry(s.expiresAt, cmd.now)) {
        return [failed, {
          type: "AccessCodeExpired",
          data: { patientId: s.patientId, requestId: s.requestId, shareId: null },
        }];
      }
      if (!digestsEqual(cmd.candidateDigest, s.codeDigest)) {
        if (s.wrongCodes + 1 < MAX_WRONG_CODES) return [failed];
        return [failed, {
          type: "AccessCodeLocked",
          data: {
            patientId: s.patientId,
            practitionerId: cmd.practitionerId,
            requestId: s.requestId,
            until: null,
          },
        }];
      }
      return [
        {
          type: "AccessCodeVerified",
          data: { requestId: s.requestId, patientId: s.patientId, grantId: cmd.grantId },
        },
        {
          type: "AccessGranted",
          data: {
            grantId: cmd.grantId,
            patientId: s.patientId,
            granteeKind: s.clinicId ? "clinic" : "practitioner",
            granteeId: s.clinicId ?? s.practitionerId,
            source: "request",
            sourceId: s.requestId,
            // an erased patient's request is refused before it gets here
            purpose: s.purpose ?? "",
            expiresAt: new Date(cmd.now.getTime() + s.durationHours * 3_600_000).toISOString(),
          },
        },
      ];
    }
    default:
      return unreachable(cmd, "command");
  }
};

/**
 * What a verify attempt came to, from the events it appended and the state
 * after them: granted, or the reason it was refused. A lone
 * `AccessCodeFailed` changes no status, so the state after it tells what
 * the request was when the attempt was decided.
 */
export const verifyOutcome = (
  after: AccessRequest,
  events: readonly NewAccessRequestEvent[],
): "granted" | "invalid" | "locked" | "used" | "expired" => {
  if (events.some((e) => e.type === "AccessGranted")) return "granted";
  if (events.some((e) => e.type === "AccessCodeExpired")) return "expired";
  if (events.some((e) => e.type === "AccessCodeLocked")) return "invalid"; // the fifth wrong code
  switch (after.status) {
    case "verified":
      return "used";
    case "locked":
      return "locked";
    case "expired":
      return "expired";
    default:
      return "invalid";
  }
};

export const accessRequestDecider: Decider<
  AccessRequest,
  AccessRequestCommand,
  AccessRequestEvent,
  NewAccessRequestEvent
> = { initialState, accepts: isRequestEvent, evolve, decide };
