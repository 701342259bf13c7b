import {
  ClinicDeactivated,
  type ClinicDetails,
  ClinicReactivated,
  ClinicRegistered,
  ClinicUpdated,
} from "../../events/clinic.ts";
import { ConflictError, NotFoundError } from "../errors.ts";
import { type EventOf, eventsOf, type NewEventOf } from "../store/catalog.ts";
import { type AnyEvent, type Decider, foldEvents, unreachable } from "./decider.ts";

export type Clinic =
  | { status: "none" }
  | { status: "registered"; clinicId: string; active: boolean; details: ClinicDetails };

export type ClinicCommand =
  | { type: "RegisterClinic"; clinicId: string; details: ClinicDetails }
  | { type: "UpdateClinic"; changes: Partial<ClinicDetails>; active?: boolean };

type Events =
  | typeof ClinicRegistered
  | typeof ClinicUpdated
  | typeof ClinicDeactivated
  | typeof ClinicReactivated;
const isClinicEvent = eventsOf(
  ClinicRegistered,
  ClinicUpdated,
  ClinicDeactivated,
  ClinicReactivated,
);
export type ClinicEvent = EventOf<Events>;
export type NewClinicEvent = NewEventOf<Events>;

const initialState = (): Clinic => ({ status: "none" });

export const evolve = (s: Clinic, e: ClinicEvent): Clinic => {
  switch (e.type) {
    case "ClinicRegistered": {
      const { clinicId, ...details } = e.data;
      return { status: "registered", clinicId, active: true, details };
    }
    case "ClinicUpdated":
      return s.status === "none" ? s : { ...s, details: { ...s.details, ...e.data.changes } };
    case "ClinicDeactivated":
      return s.status === "none" ? s : { ...s, active: false };
    case "ClinicReactivated":
      return s.status === "none" ? s : { ...s, active: true };
    default:
      return unreachable(e, "event");
  }
};

export const fold = (events: readonly AnyEvent[]): Clinic =>
  foldEvents({ initialState, accepts: isClinicEvent, evolve }, events);

const same = (a: unknown, b: unknown) => JSON.stringify(a) === JSON.stringify(b);

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
