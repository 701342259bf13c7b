import { CareTeamMemberAdded, CareTeamMemberRemoved } from "../../events/patient.ts";
import { type EventOf, eventsOf, type NewEventOf } from "../store/catalog.ts";
import { type AnyEvent, type Decider, foldEvents, unreachable } from "./decider.ts";

/** A patient's care team: the practitioners on it. */
export type CareTeam = ReadonlySet<string>;

export type CareTeamCommand =
  | { type: "AddMember"; patientId: string; practitionerId: string }
  | { type: "RemoveMember"; patientId: string; practitionerId: string };

const isCareTeamEvent = eventsOf(CareTeamMemberAdded, CareTeamMemberRemoved);
export type CareTeamEvent = EventOf<typeof CareTeamMemberAdded | typeof CareTeamMemberRemoved>;
export type NewCareTeamEvent = NewEventOf<
  typeof CareTeamMemberAdded | typeof CareTeamMemberRemoved
>;

const initialState = (): CareTeam => new Set();

export const evolve = (s: CareTeam, e: CareTeamEvent): CareTeam => {
  const next = new Set(s);
  switch (e.type) {
    case "CareTeamMemberAdded":
      next.add(e.data.practitionerId);
      return next;
    case "CareTeamMemberRemoved":
      next.delete(e.data.practitionerId);
      return next;
    default:
      return unreachable(e, "event");
  }
};

/** Who is on the team and since when (ISO time of the add), in the order they joined. */
export const members = (
  events: readonly (AnyEvent & { recordedAt: Date })[],
): ReadonlyMap<string, string> => {
  const since = new Map<string, string>();
  for (const e of events) {
    if (!isCareTeamEvent(e)) continue;
    if (e.type === "CareTeamMemberAdded") {
      since.set(e.data.practitionerId, e.recordedAt.toISOString());
    } else since.delete(e.data.practitionerId);
  }
  return since;
};

export const fold = (events: readonly AnyEvent[]): CareTeam =>
  foldEvents({ initialState, accepts: isCareTeamEvent, evolve }, events);

/** Pure: adding a member twice or removing a non-member changes nothing (no event). */
export const decide = (cmd: CareTeamCommand, s: CareTeam): NewCareTeamEvent[] => {
  const data = { patientId: cmd.patientId, practitionerId: cmd.practitionerId };
  switch (cmd.type) {
    case "AddMember":
      return s.has(cmd.practitionerId) ? [] : [{ type: "CareTeamMemberAdded", data }];
    case "RemoveMember":
      return s.has(cmd.practitionerId) ? [{ type: "CareTeamMemberRemoved", data }] : [];
    default:
      return unreachable(cmd, "command");
  }
};

export const careTeamDecider: Decider<CareTeam, CareTeamCommand, CareTeamEvent, NewCareTeamEvent> =
  { initialState, accepts: isCareTeamEvent, evolve, decide };
