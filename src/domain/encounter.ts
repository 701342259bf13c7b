import { ENCOUNTER_STATUSES } from "../../events/encounter.ts";
import { ConflictError, NotFoundError, ValidationError } from "../errors.ts";
import type { NewEvent, StoredEvent } from "../store/types.ts";

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

export const evolve = (s: Encounter, e: Pick<StoredEvent, "type" | "data">): Encounter => {
  const d = e.data as Record<string, unknown>;
  if (e.type === "EncounterPlanned") {
    return {
      status: "planned",
      encounterId: d.encounterId as string,
      patientId: d.patientId as string,
      practitionerId: d.practitionerId as string,
      startsAt: d.startsAt as string,
      reason: (d.reason as string | null) ?? null,
    };
  }
  if (e.type === "EncounterStatusChanged" && s.status !== "none") {
    return { ...s, status: d.to as EncounterStatus };
  }
  return s;
};

export const fold = (events: readonly Pick<StoredEvent, "type" | "data">[]): Encounter =>
  events.reduce(evolve, { status: "none" } as Encounter);

/** Pure: the events a command produces on an encounter. An illegal transition is a conflict. */
export const decide = (cmd: EncounterCommand, s: Encounter): NewEvent[] => {
  if (cmd.type === "PlanEncounter") {
    if (s.status !== "none") throw new ConflictError("encounter exists");
    if (!cmd.reason.trim()) {
      throw new ValidationError("a reason is required", [{ path: "reason", message: "required" }]);
    }
    const { type: _t, ...data } = cmd;
    return [{ type: "EncounterPlanned", data: { ...data, reason: cmd.reason.trim() } }];
  }
  if (s.status === "none") throw new NotFoundError("no such encounter");
  if (cmd.to === s.status) return [];
  if (!NEXT[s.status].includes(cmd.to)) {
    throw new ConflictError(`an encounter cannot go from ${s.status} to ${cmd.to}`);
  }
  return [{
    type: "EncounterStatusChanged",
    data: { encounterId: s.encounterId, patientId: s.patientId, from: s.status, to: cmd.to },
  }];
};
