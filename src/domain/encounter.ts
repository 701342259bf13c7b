import {
  ENCOUNTER_STATUSES,
  EncounterPlanned,
  EncounterStatusChanged,
} from "../../events/encounter.ts";
import { ConflictError, NotFoundError } from "../errors.ts";
import { type EventOf, eventsOf, type NewEventOf } from "../store/catalog.ts";
import { type AnyEvent, type Decider, foldEvents, requiredReason, unreachable } from "./decider.ts";

export type EncounterStatus = (typeof ENCOUNTER_STATUSES)[number];

export type Encounter =
  | { status: "none" }
  | {
    status: EncounterStatus;
    encounterId: string;
    patientId: string;
    practitionerId: string;
    startsAt: string;
    reason: string | null;
  };

export type EncounterCommand =
  | {
    type: "PlanEncounter";
    encounterId: string;
    patientId: string;
    practitionerId: string;
    startsAt: string;
    reason: string;
  }
  | { type: "ChangeStatus"; to: EncounterStatus };

/** planned → in_progress → finished; cancelled from any state that is not finished. */
const NEXT: Readonly<Record<EncounterStatus, readonly EncounterStatus[]>> = {
  planned: ["in_progress", "cancelled"],
  in_progress: ["finished", "cancelled"],
  finished: [],
  cancelled: [],
};

const isEncounterEvent = eventsOf(EncounterPlanned, EncounterStatusChanged);
export type EncounterEvent = EventOf<typeof EncounterPlanned | typeof EncounterStatusChanged>;
export type NewEncounterEvent = NewEventOf<
  typeof EncounterPlanned | typeof EncounterStatusChanged
>;

const initialState = (): Encounter => ({ status: "none" });

export const evolve = (s: Encounter, e: EncounterEvent): Encounter => {
  switch (e.type) {
    case "EncounterPlanned": {
      const { encounterId, patientId, practitionerId, startsAt, reason } = e.data;
      return { status: "planned", encounterId, patientId, practitionerId, startsAt, reason };
    }
    case "EncounterStatusChanged":
      return s.status === "none" ? s : { ...s, status: e.data.to };
    default:
      return unreachable(e, "event");
  }
};

export const fold = (events: readonly AnyEvent[]): Encounter =>
  foldEvents({ initialState, accepts: isEncounterEvent, evolve }, events);

/** Pure: the events a command produces on an encounter. An illegal transition is a conflict. */
export const decide = (cmd: EncounterCommand, s: Encounter): NewEncounterEvent[] => {
  switch (cmd.type) {
    case "PlanEncounter": {
      if (s.status !== "none") throw new ConflictError("encounter exists");
      const { type: _t, ...data } = cmd;
      return [{ type: "EncounterPlanned", data: { ...data, reason: requiredReason(cmd.reason) } }];
    }
    case "ChangeStatus": {
      if (s.status === "none") throw new NotFoundError("no such encounter");
      if (cmd.to === s.status) return [];
      if (!NEXT[s.status].includes(cmd.to)) {
        throw new ConflictError(`an encounter cannot go from ${s.status} to ${cmd.to}`);
      }
      return [{
        type: "EncounterStatusChanged",
        data: { encounterId: s.encounterId, patientId: s.patientId, from: s.status, to: cmd.to },
      }];
    }
    default:
      return unreachable(cmd, "command");
  }
};

export const encounterDecider: Decider<
  Encounter,
  EncounterCommand,
  EncounterEvent,
  NewEncounterEvent
> = { initialState, accepts: isEncounterEvent, evolve, decide };
