import {
  ClinicDeactivated,
  type ClinicDetails,
  ClinicOwnerAdded,
  ClinicOwnerRemoved,
  ClinicPractitionerAdded,
  ClinicPractitionerUpdated,
  ClinicReactivated,
  ClinicRegistered,
  ClinicUpdated,
  type EmploymentType,
} from "../../events/clinic.ts";
import { ConflictError, NotFoundError, ValidationError } from "../errors.ts";
import { type EventOf, eventsOf, type NewEventOf } from "../store/catalog.ts";
import { type AnyEvent, type Decider, foldEvents, unreachable } from "./decider.ts";

/** A practitioner's membership of a clinic; kept when they leave (`active: false`). */
export interface Membership {
  active: boolean;
  employmentType: EmploymentType;
}

export type Clinic =
  | { status: "none" }
  | {
    status: "registered";
    clinicId: string;
    active: boolean;
    details: ClinicDetails;
    /** By practitioner user id. */
    members: Readonly<Record<string, Membership>>;
    /** The user ids of its owners (role `clinic_owner`). */
    owners: readonly string[];
  };

/**
 * What the handler read about the practitioner a membership command names:
 * `unknown` (no such account: 404), `ineligible` (not an active user with
 * the practitioner role: 422), or `eligible`. The decider has no I/O.
 */
export type PractitionerStanding = "unknown" | "ineligible" | "eligible";

/**
 * What the handler read about the user an `AddOwner` names: `eligible` when
 * an active user with the role `clinic_owner`, else `ineligible` (a 422 on
 * `userId`: an unknown user too, as the issue asks).
 */
export type OwnerStanding = "ineligible" | "eligible";

export type ClinicCommand =
  | { type: "RegisterClinic"; clinicId: string; details: ClinicDetails }
  | { type: "UpdateClinic"; changes: Partial<ClinicDetails>; active?: boolean }
  | {
    type: "AddPractitioner";
    userId: string;
    employmentType: EmploymentType;
    standing: PractitionerStanding;
  }
  | {
    type: "UpdatePractitioner";
    userId: string;
    changes: { active?: boolean; employmentType?: EmploymentType };
    standing: PractitionerStanding;
  }
  | { type: "AddOwner"; userId: string; standing: OwnerStanding }
  | { type: "RemoveOwner"; userId: string };

type Events =
  | typeof ClinicRegistered
  | typeof ClinicUpdated
  | typeof ClinicDeactivated
  | typeof ClinicReactivated
  | typeof ClinicPractitionerAdded
  | typeof ClinicPractitionerUpdated
  | typeof ClinicOwnerAdded
  | typeof ClinicOwnerRemoved;
const isClinicEvent = eventsOf(
  ClinicRegistered,
  ClinicUpdated,
  ClinicDeactivated,
  ClinicReactivated,
  ClinicPractitionerAdded,
  ClinicPractitionerUpdated,
  ClinicOwnerAdded,
  ClinicOwnerRemoved,
);
export type ClinicEvent = EventOf<Events>;
export type NewClinicEvent = NewEventOf<Events>;

const initialState = (): Clinic => ({ status: "none" });

export const evolve = (s: Clinic, e: ClinicEvent): Clinic => {
  switch (e.type) {
    case "ClinicRegistered": {
      const { clinicId, ...details } = e.data;
      return { status: "registered", clinicId, active: true, details, members: {}, owners: [] };
    }
    case "ClinicUpdated":
      return s.status === "none" ? s : { ...s, details: { ...s.details, ...e.data.changes } };
    case "ClinicDeactivated":
      return s.status === "none" ? s : { ...s, active: false };
    case "ClinicReactivated":
      return s.status === "none" ? s : { ...s, active: true };
    case "ClinicPractitionerAdded":
      return s.status === "none" ? s : {
        ...s,
        members: {
          ...s.members,
          [e.data.userId]: { active: true, employmentType: e.data.employmentType },
        },
      };
    case "ClinicPractitionerUpdated": {
      const m = s.status === "none" ? undefined : s.members[e.data.userId];
      if (s.status === "none" || !m) return s;
      return { ...s, members: { ...s.members, [e.data.userId]: { ...m, ...e.data.changes } } };
    }
    case "ClinicOwnerAdded":
      return s.status === "none" ? s : { ...s, owners: [...s.owners, e.data.userId] };
    case "ClinicOwnerRemoved":
      return s.status === "none"
        ? s
        : { ...s, owners: s.owners.filter((id) => id !== e.data.userId) };
    default:
      return unreachable(e, "event");
  }
};

export const fold = (events: readonly AnyEvent[]): Clinic =>
  foldEvents({ initialState, accepts: isClinicEvent, evolve }, events);

const same = (a: unknown, b: unknown) => JSON.stringify(a) === JSON.stringify(b);

/** Only an existing, active practitioner joins a clinic. */
const checkStanding = (standing: PractitionerStanding): void => {
  if (standing === "unknown") throw new NotFoundError("no such user");
  if (standing === "ineligible") {
    throw new ValidationError("only an active practitioner can be a clinic member", [
      { path: "userId", message: "not an active user with the practitioner role" },
    ]);
  }
};

/** Pure: the events a command produces. An update records only what changed. */
export const decide = (cmd: ClinicCommand, s: Clinic): NewClinicEvent[] => {
  switch (cmd.type) {
    case "RegisterClinic":
      if (s.status !== "none") throw new ConflictError("clinic exists");
      return [{ type: "ClinicRegistered", data: { clinicId: cmd.clinicId, ...cmd.details } }];
    case "UpdateClinic": {
      if (s.status === "none") throw new NotFoundError("no such clinic");
      const changes: Record<string, unknown> = {};
      for (const [k, v] of Object.entries(cmd.changes)) {
        if (v !== undefined && !same(v, s.details[k as keyof ClinicDetails])) changes[k] = v;
      }
      const out: NewClinicEvent[] = [];
      if (Object.keys(changes).length > 0) {
        out.push({
          type: "ClinicUpdated",
          data: { clinicId: s.clinicId, changes: changes as Partial<ClinicDetails> },
        });
      }
      if (cmd.active === false && s.active) {
        out.push({ type: "ClinicDeactivated", data: { clinicId: s.clinicId } });
      }
      if (cmd.active === true && !s.active) {
        out.push({ type: "ClinicReactivated", data: { clinicId: s.clinicId } });
      }
      return out;
    }
    case "AddPractitioner": {
      if (s.status === "none") throw new NotFoundError("no such clinic");
      checkStanding(cmd.standing);
      if (s.members[cmd.userId]) {
        throw new ConflictError("already a member of this clinic (PATCH it to rejoin)");
      }
      if (!s.active) throw new ConflictError("the clinic is inactive: it takes no new members");
      return [{
        type: "ClinicPractitionerAdded",
        data: { clinicId: s.clinicId, userId: cmd.userId, employmentType: cmd.employmentType },
      }];
    }
    case "UpdatePractitioner": {
      if (s.status === "none") throw new NotFoundError("no such clinic");
      const m = s.members[cmd.userId];
      if (!m) throw new NotFoundError("not a member of this clinic");
      const changes: { active?: boolean; employmentType?: EmploymentType } = {};
      if (cmd.changes.active !== undefined && cmd.changes.active !== m.active) {
        changes.active = cmd.changes.active;
      }
      if (
        cmd.changes.employmentType !== undefined && cmd.changes.employmentType !== m.employmentType
      ) {
        changes.employmentType = cmd.changes.employmentType;
      }
      if (changes.active === true) {
        // rejoining is joining: the same rules as a new member
        checkStanding(cmd.standing);
        if (!s.active) throw new ConflictError("the clinic is inactive: it takes no new members");
      }
      if (Object.keys(changes).length === 0) return [];
      return [{
        type: "ClinicPractitionerUpdated",
        data: { clinicId: s.clinicId, userId: cmd.userId, changes },
      }];
    }
    case "AddOwner": {
      if (s.status === "none") throw new NotFoundError("no such clinic");
      if (cmd.standing === "ineligible") {
        throw new ValidationError("only an active clinic_owner user can own a clinic", [
          { path: "userId", message: "not an active user with the clinic_owner role" },
        ]);
      }
      // idempotent: of concurrent adds one appends, the rest find the owner there
      if (s.owners.includes(cmd.userId)) return [];
      return [{ type: "ClinicOwnerAdded", data: { clinicId: s.clinicId, userId: cmd.userId } }];
    }
    case "RemoveOwner":
      if (s.status === "none") throw new NotFoundError("no such clinic");
      if (!s.owners.includes(cmd.userId)) throw new NotFoundError("not an owner of this clinic");
      return [{ type: "ClinicOwnerRemoved", data: { clinicId: s.clinicId, userId: cmd.userId } }];
    default:
      return unreachable(cmd, "command");
  }
};

export const clinicDecider: Decider<Clinic, ClinicCommand, ClinicEvent, NewClinicEvent> = {
  initialState,
  accepts: isClinicEvent,
  evolve,
  decide,
};
