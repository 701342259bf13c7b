import {
  AccessCodeExpired,
  AccessCodeFailed,
  AccessCodeRedeemed,
  AccessCodeShared,
  AccessGranted,
} from "../../events/access.ts";
import { CODE_TTL_MS } from "../auth/access_codes.ts";
import { NotFoundError } from "../errors.ts";
import { type EventOf, eventsOf, type NewEventOf } from "../store/catalog.ts";
import { type AnyEvent, type Decider, foldEvents, unreachable } from "./decider.ts";
import { isPastExpiry } from "./access_request.ts";

/**
 * A code the patient (or a full proxy) shared first, decided over its
 * `access-share-<shareId>` stream. Redeeming it is one append at the
 * stream's version (`AccessCodeRedeemed` + `AccessGranted`), so of two
 * concurrent redeems one wins and the other, decided again, finds it used.
 *
 * Which share a code belongs to was found by its digest before (the
 * redeemer brings the patient id and the code, no share id), so the
 * commands here carry no code. An attempt on a share that is used or
 * expired appends `AccessCodeFailed` (`requestId` null; `attempt` counts
 * the stream's failed attempts); the first one past the 10 minutes also
 * `AccessCodeExpired`.
 */

export type ShareStatus = "pending" | "redeemed" | "expired";

export type AccessShare =
  | { status: "none" }
  | {
    status: ShareStatus;
    shareId: string;
    patientId: string;
    practitionerId: string | null;
    clinicId: string | null;
    purpose: string | null;
    durationHours: number;
    expiresAt: string;
    failedAttempts: number;
  };

export type AccessShareCommand =
  | {
    type: "ShareCode";
    shareId: string;
    patientId: string;
    practitionerId: string | null;
    clinicId: string | null;
    purpose: string;
    durationHours: number;
    codeDigest: string;
    now: Date;
  }
  | { type: "RedeemCode"; practitionerId: string; grantId: string; now: Date };

type Defs =
  | typeof AccessCodeShared
  | typeof AccessCodeFailed
  | typeof AccessCodeExpired
  | typeof AccessCodeRedeemed
  | typeof AccessGranted;
const isShareEvent = eventsOf(
  AccessCodeShared,
  AccessCodeFailed,
  AccessCodeExpired,
  AccessCodeRedeemed,
  AccessGranted,
);
export type AccessShareEvent = EventOf<Defs>;
export type NewAccessShareEvent = NewEventOf<Defs>;

const initialState = (): AccessShare => ({ status: "none" });

export const evolve = (s: AccessShare, e: AccessShareEvent): AccessShare => {
  if (e.type === "AccessCodeShared") {
    const d = e.data;
    return {
      status: "pending",
      shareId: d.shareId,
      patientId: d.patientId,
      practitionerId: d.practitionerId,
      clinicId: d.clinicId,
      purpose: d.purpose,
      durationHours: d.durationHours,
      expiresAt: d.expiresAt,
      failedAttempts: 0,
    };
  }
  if (s.status === "none") return s;
  switch (e.type) {
    case "AccessCodeFailed":
      return { ...s, failedAttempts: e.data.attempt };
    case "AccessCodeExpired":
      return { ...s, status: "expired" };
    case "AccessCodeRedeemed":
      return { ...s, status: "redeemed" };
    case "AccessGranted":
      return s;
    default:
      return unreachable(e, "event");
  }
};

export const fold = (events: readonly AnyEvent[]): AccessShare =>
  foldEvents({ initialState, accepts: isShareEvent, evolve }, events);

/** Pure: the events a command produces; {@link redeemOutcome} reads the answer off them. */
export const decide = (cmd: AccessShareCommand, s: AccessShare): NewAccessShareEvent[] => {
  switch (cmd.type) {
    case "ShareCode": {
      if (s.status !== "none") return [];
      const { type: _t, now, ...d } = cmd;
      return [{
        type: "AccessCodeShared",
        data: { ...d, expiresAt: new Date(now.getTime() + CODE_TTL_MS).toISOString() },
      }];
    }
    case "RedeemCode": {
      if (s.status === "none") throw new NotFoundError("no such share");
      const failed: NewAccessShareEvent = {
        type: "AccessCodeFailed",
        data: {
          patientId: s.patientId,
          practitionerId: cmd.practitionerId,
          requestId: null,
          attempt: s.failedAttempts + 1,
        },
      };
      if (s.status !== "pending") return [failed];
      if (isPastExpiry(s.expiresAt, cmd.now)) {
        return [failed, {
          type: "AccessCodeExpired",
          data: { patientId: s.patientId, requestId: null, shareId: s.shareId },
        }];
      }
      return [
        {
          type: "AccessCodeRedeemed",
          data: {
            shareId: s.shareId,
            patientId: s.patientId,
            practitionerId: cmd.practitionerId,
            grantId: cmd.grantId,
          },
        },
        {
          type: "AccessGranted",
          data: {
            grantId: cmd.grantId,
            patientId: s.patientId,
            granteeKind: s.clinicId ? "clinic" : "practitioner",
            granteeId: s.clinicId ?? s.practitionerId ?? cmd.practitionerId,
            source: "share",
            sourceId: s.shareId,
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

/** What a redeem came to, from the events it appended and the state after them. */
export const redeemOutcome = (
  after: AccessShare,
  events: readonly NewAccessShareEvent[],
): "granted" | "used" | "expired" => {
  if (events.some((e) => e.type === "AccessGranted")) return "granted";
  return after.status === "redeemed" ? "used" : "expired";
};

export const accessShareDecider: Decider<
  AccessShare,
  AccessShareCommand,
  AccessShareEvent,
  NewAccessShareEvent
> = { initialState, accepts: isShareEvent, evolve, decide };
