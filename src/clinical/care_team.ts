import type { EventMetadata } from "../../events/metadata.ts";
import { handleCommand } from "../domain/command_handler.ts";
import { type CareTeamCommand, careTeamDecider, members } from "../domain/care_team.ts";
import { NotFoundError } from "../errors.ts";
import type { EventStore } from "../store/event_store.ts";
import { sql } from "../store/sql.ts";
import { patientStream } from "./patients.ts";

export const careTeamStream = (patientId: string) => `careteam-${patientId}`;

/** One member of a care team as the API shows it: staff, so the name is no patient PHI. */
export interface CareTeamMember {
  practitionerId: string;
  name: string | null;
  addedAt: string;
}

/** The patient's care team, folded from its stream, in the order they joined. */
export const loadCareTeam = async (
  store: EventStore,
  patientId: string,
): Promise<CareTeamMember[]> => {
  const team = members(await store.readStream(careTeamStream(patientId)));
  if (team.size === 0) return [];
  const ids = [...team.keys()];
  const names = new Map(
    (await store.db.query<{ id: string; name: string | null }>(
      sql`select id::text as id, name from users where id = any(${ids}::uuid[])`,
    )).map((r) => [r.id, r.name]),
  );
  return ids.map((id) => ({
    practitionerId: id,
    name: names.get(id) ?? null,
    addedAt: team.get(id)!,
  }));
};

/**
 * Adds or removes a practitioner, decided from the team's stream and
 * appended with its expected version: of concurrent identical adds exactly
 * one appends (and reports `changed`), the others see the member and change
 * nothing. Removal ends the care-team relation at once (the projection is
 * inline).
 */
export const changeCareTeam = async (
  store: EventStore,
  patientId: string,
  practitionerId: string,
  add: boolean,
  metadata: EventMetadata,
): Promise<{ changed: boolean }> => {
  if ((await store.streamVersion(patientStream(patientId))) === 0) {
    throw new NotFoundError("no such patient");
  }
  if (add) {
    const [p] = await store.db.query<{ role: string }>(
      sql`select role from users where id = ${practitionerId}::uuid and active`,
    );
    if (p?.role !== "practitioner") throw new NotFoundError("no such active practitioner");
  }
  const cmd: CareTeamCommand = {
    type: add ? "AddMember" : "RemoveMember",
    patientId,
    practitionerId,
  };
  // of concurrent changes the losers re-read and decide again (503 when they never settle)
  const r = await handleCommand(store, careTeamDecider, careTeamStream(patientId), cmd, {
    metadata,
    unseal: false,
    retry: true,
  });
  return { changed: r.events.length > 0 };
};
