import {
  MfaDisabled,
  MfaEnabled,
  MfaEnrollmentStarted,
  MfaReset,
  MfaVerified,
} from "../../events/auth.ts";
import { ConflictError, NotFoundError } from "../errors.ts";
import { type EventOf, eventsOf, type NewEventOf } from "../store/catalog.ts";
import { type AnyEvent, type Decider, foldEvents, unreachable } from "./decider.ts";

/**
 * The account's second factor, decided over its `auth-<userId>` stream (the
 * credential events share it, so both append at one version). The codes
 * themselves are checked before deciding, against the sealed secret; a code
 * used twice is refused where it is recorded (the users projection).
 */
export type Mfa = { status: "off" | "pending" | "on" };

export type VerifiedFactor = NewEventOf<typeof MfaVerified>;

export type MfaCommand =
  | { type: "StartEnrollment"; userId: string; secret: string }
  | {
    type: "ConfirmEnrollment";
    userId: string;
    verified: VerifiedFactor;
    recoveryCodeDigests: string[];
  }
  | { type: "Disable"; userId: string; verified: VerifiedFactor }
  | { type: "Reset"; userId: string; operatorId: string; reason: string };

type MfaDefs =
  | typeof MfaEnrollmentStarted
  | typeof MfaEnabled
  | typeof MfaDisabled
  | typeof MfaVerified
  | typeof MfaReset;
const isMfaEvent = eventsOf(MfaEnrollmentStarted, MfaEnabled, MfaDisabled, MfaVerified, MfaReset);
export type MfaEvent = EventOf<MfaDefs>;
export type NewMfaEvent = NewEventOf<MfaDefs>;

const initialState = (): Mfa => ({ status: "off" });

export const evolve = (s: Mfa, e: MfaEvent): Mfa => {
  switch (e.type) {
    case "MfaEnrollmentStarted":
      return s.status === "on" ? s : { status: "pending" };
    case "MfaEnabled":
      return { status: "on" };
    case "MfaDisabled":
    case "MfaReset":
      return { status: "off" };
    case "MfaVerified":
      return s;
    default:
      return unreachable(e, "event");
  }
};

export const fold = (events: readonly AnyEvent[]): Mfa =>
  foldEvents({ initialState, accepts: isMfaEvent, evolve }, events);

/** Pure: enrol (start, confirm with a first code), disable with a code, or an operator's reset. */
export const decide = (cmd: MfaCommand, s: Mfa): NewMfaEvent[] => {
  const { userId } = cmd;
  switch (cmd.type) {
    case "StartEnrollment":
      if (s.status === "on") throw new ConflictError("two-factor authentication is already on");
      return [{ type: "MfaEnrollmentStarted", data: { userId, secret: cmd.secret } }];
    case "ConfirmEnrollment":
      if (s.status === "on") throw new ConflictError("two-factor authentication is already on");
      if (s.status === "off") throw new NotFoundError("no two-factor enrolment in progress");
      return [cmd.verified, {
        type: "MfaEnabled",
        data: { userId, recoveryCodeDigests: cmd.recoveryCodeDigests },
      }];
    case "Disable":
      if (s.status !== "on") throw new NotFoundError("two-factor authentication is not on");
      return [cmd.verified, { type: "MfaDisabled", data: { userId } }];
    case "Reset":
      if (s.status === "off") throw new ConflictError("that user has no second factor to reset");
      return [{
        type: "MfaReset",
        data: { userId, operatorId: cmd.operatorId, reason: cmd.reason },
      }];
    default:
      return unreachable(cmd, "command");
  }
};

export const mfaDecider: Decider<Mfa, MfaCommand, MfaEvent, NewMfaEvent> = {
  initialState,
  accepts: isMfaEvent,
  evolve,
  decide,
};
