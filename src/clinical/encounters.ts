import type { EventMetadata } from "../../events/metadata.ts";
import { handleCommand } from "../domain/command_handler.ts";
import { encounterDecider, type EncounterStatus, fold } from "../domain/encounter.ts";
import { ConflictError, NotFoundError } from "../errors.ts";
import type { EventStore } from "../store/event_store.ts";
import type { StoredEvent } from "../store/types.ts";
import { sql } from "../store/sql.ts";
import { timestamp } from "../timestamp.ts";
import { patientStream } from "./patients.ts";
import { fold as foldPatient } from "../domain/patient.ts";

export const encounterStream = (id: string) => `encounter-${id}`;

export interface EncounterView {
  id: string;
  patientId: string;
  practitionerId: string;
  startsAt: string;
  reason: string | null;
  status: EncounterStatus;
  createdAt: string;
  updatedAt: string;
  version: number;
}

export const loadEncounter = async (
  store: EventStore,
  id: string,
): Promise<EncounterView | null> => view(await store.readStream(encounterStream(id)));

/** An encounter as its stream's events (unsealed) tell it, or null when it has none. */
const view = (events: readonly StoredEvent[]): EncounterView | null => {
  const s = fold(events);
  if (s.status === "none") return null;
  return {
    id: s.encounterId,
    patientId: s.patientId,
    practitionerId: s.practitionerId,
    startsAt: timestamp(s.startsAt),
    reason: s.reason,
    status: s.status,
    createdAt: timestamp(events[0]!.recordedAt),
    updatedAt: timestamp(events.at(-1)!.recordedAt),
    version: events.at(-1)!.streamVersion,
  };
};

/** The patient an encounter belongs to (for the policy), or undefined. */
export const encounterPatient = async (
  store: EventStore,
  id: string,
): Promise<string | undefined> => {
  const [r] = await store.db.query<{ p: string }>(
    sql`select patient_id::text as p from encounters where id = ${id}::uuid`,
  );
  return r?.p;
};

/** Plans an encounter for an active patient with an active practitioner. */
export const planEncounter = async (
  store: EventStore,
  input: { patientId: string; practitionerId: string; startsAt: string; reason: string },
  metadata: EventMetadata,
): Promise<EncounterView> => {
  const patient = foldPatient(
    await store.readStream(patientStream(input.patientId), { unseal: false }),
  );
  if (patient.status === "none") throw new NotFoundError("no such patient");
  if (patient.status === "deleted") throw new ConflictError("the patient is deleted");
  const [p] = await store.db.query<{ role: string }>(
    sql`select role from users where id = ${input.practitionerId}::uuid and active`,
  );
  if (p?.role !== "practitioner") throw new NotFoundError("no such active practitioner");
  const encounterId = crypto.randomUUID();
  const cmd = { type: "PlanEncounter" as const, encounterId, ...input };
  await handleCommand(store, encounterDecider, encounterStream(encounterId), cmd, { metadata });
  return (await loadEncounter(store, encounterId))!;
};

/** Moves an encounter along; an illegal transition is a 409, a stale If-Match a 412. */
export const changeEncounterStatus = async (
  store: EventStore,
  id: string,
  to: EncounterStatus,
  metadata: EventMetadata,
  ifMatch?: number,
): Promise<EncounterView> => {
  await handleCommand(store, encounterDecider, encounterStream(id), { type: "ChangeStatus", to }, {
    metadata,
    unseal: false,
    ...(ifMatch !== undefined ? { ifMatch } : { retry: true }),
  });
  return (await loadEncounter(store, id))!;
};

/** A patient's encounters, soonest first: every stream read in one query. */
export const listEncounters = async (
  store: EventStore,
  patientId: string,
): Promise<EncounterView[]> => {
  const streams = await store.readStreams(sql`select 'encounter-' || id::text as stream_id,
      row_number() over (order by starts_at, id) as ord
    from encounters where patient_id = ${patientId}::uuid`);
  return [...streams.values()].map((events) => view(events)!);
};
