import type { NewEvent, StoredEvent } from "../store/types.ts";

/** A patient's care team: who is on it, and since when (ISO time of the add). */
export type CareTeam = ReadonlyMap<string, string>;

export type CareTeamCommand =
  | { type: "AddMember"; patientId: string; practitionerId: string }
  | { type: "RemoveMember"; patientId: string; practitionerId: string };

export const evolve = (
  s: CareTeam,
  e: Pick<StoredEvent, "type" | "data" | "recordedAt">,
): CareTeam => {
  const id = e.data.practitionerId as string;
  const next = new Map(s);
  if (e.type === "CareTeamMemberAdded") next.set(id, e.recordedAt.toISOString());
  if (e.type === "CareTeamMemberRemoved") next.delete(id);
  return next;
};

export const fold = (events: readonly Pick<StoredEvent, "type" | "data" | "recordedAt">[]) =>
  events.reduce(evolve, new Map() as CareTeam);

/** Pure: adding a member twice or removing a non-member changes nothing (no event). */
export const decide = (cmd: CareTeamCommand, s: CareTeam): NewEvent[] => {
  const data = { patientId: cmd.patientId, practitionerId: cmd.practitionerId };
  switch (cmd.type) {
    case "AddMember":
      return s.has(cmd.practitionerId) ? [] : [{ type: "CareTeamMemberAdded", data }];
    case "RemoveMember":
      return s.has(cmd.practitionerId) ? [{ type: "CareTeamMemberRemoved", data }] : [];
    default:
      return assertNever(cmd);
  }
};

const assertNever = (x: never): never => {
  throw new Error(`unknown command ${JSON.stringify(x)}`);
};
