import {
  PractitionerProfileFields,
  PractitionerProfileSet,
  PractitionerProfileUpdated,
} from "../../events/practitioner.ts";
import { NotFoundError, ValidationError } from "../errors.ts";
import { type EventOf, eventsOf, type NewEventOf } from "../store/catalog.ts";
import { type AnyEvent, type Decider, foldEvents, unreachable } from "./decider.ts";

/** A profile as its stream describes it; an erased bio reads as null. */
export type PractitionerProfile =
  | { status: "none" }
  | { status: "set"; userId: string; fields: PractitionerProfileFields };

/**
 * Sets the fields given (the first time, `licenseNumber` is required and the
 * rest default to empty). `isPractitioner`: the user exists and has the
 * practitioner role, as the handler read it from the account; only
 * practitioners have a profile.
 */
export type PractitionerCommand = {
  type: "SetProfile";
  userId: string;
  isPractitioner: boolean;
  changes: Partial<PractitionerProfileFields>;
};

type Events = typeof PractitionerProfileSet | typeof PractitionerProfileUpdated;
const isProfileEvent = eventsOf(PractitionerProfileSet, PractitionerProfileUpdated);
export type PractitionerEvent = EventOf<Events>;
export type NewPractitionerEvent = NewEventOf<Events>;

const initialState = (): PractitionerProfile => ({ status: "none" });

/** What a profile holds before anything is set. */
const EMPTY = { specialization: null, yearsOfExperience: null, qualifications: [], bio: null };

export const evolve = (s: PractitionerProfile, e: PractitionerEvent): PractitionerProfile => {
  switch (e.type) {
    case "PractitionerProfileSet": {
      const { userId, ...fields } = e.data;
      return { status: "set", userId, fields };
    }
    case "PractitionerProfileUpdated": {
      if (s.status === "none") return s;
      const { userId: _u, ...changes } = e.data;
      return { ...s, fields: { ...s.fields, ...changes } };
    }
    default:
      return unreachable(e, "event");
  }
};

export const fold = (events: readonly AnyEvent[]): PractitionerProfile =>
  foldEvents({ initialState, accepts: isProfileEvent, evolve }, events);

const same = (a: unknown, b: unknown) => JSON.stringify(a) === JSON.stringify(b);

/** Pure: the events a command produces. An update records only what changed. */
export const decide = (
  cmd: PractitionerCommand,
  s: PractitionerProfile,
): NewPractitionerEvent[] => {
  switch (cmd.type) {
    case "SetProfile": {
      if (!cmd.isPractitioner) throw new NotFoundError("no such practitioner");
      if (s.status === "none") {
        if (cmd.changes.licenseNumber === undefined) {
          throw new ValidationError("a new profile needs a license number", [
            { path: "licenseNumber", message: "required for a new profile" },
          ]);
        }
        const fields = { ...EMPTY, ...cmd.changes } as PractitionerProfileFields;
        return [{ type: "PractitionerProfileSet", data: { userId: cmd.userId, ...fields } }];
      }
      const changes: Record<string, unknown> = {};
      for (const [k, v] of Object.entries(cmd.changes)) {
        if (v !== undefined && !same(v, s.fields[k as keyof PractitionerProfileFields])) {
          changes[k] = v;
        }
      }
      if (Object.keys(changes).length === 0) return [];
      return [{
        type: "PractitionerProfileUpdated",
        data: { userId: s.userId, ...changes as Partial<PractitionerProfileFields> },
      }];
    }
    default:
      return unreachable(cmd.type, "command");
  }
};

export const practitionerDecider: Decider<
  PractitionerProfile,
  PractitionerCommand,
  PractitionerEvent,
  NewPractitionerEvent
> = { initialState, accepts: isProfileEvent, evolve, decide };
