/**
 * Which records an actor may see at all. A soft-deleted record answers as
 * if it did not exist (404) to everyone who may not see deleted ones, so a
 * delete hides it without revealing that it was there; an erased patient
 * and everything under it is 410 Gone to everyone: there is nothing left to
 * protect or to show, and the id must not read as unknown. Routers call
 * these after `authorize`, so who may not act at all still gets the 403.
 *
 * @module
 */
import { type Actor, can } from "../auth/policy.ts";
import { GoneError, NotFoundError } from "../errors.ts";
import type { EventStore } from "../store/event_store.ts";
import { sql } from "../store/sql.ts";
import { loadMedia, type MediaRecord } from "./media.ts";
import { isErased, loadPatient, type PatientRowState, type PatientView } from "./patients.ts";

export type { PatientRowState };

/** 410 when the patient was erased. */
export const refuseErased = async (store: EventStore, patientId: string): Promise<void> => {
  if (await isErased(store, patientId)) throw new GoneError("the patient was erased");
};

/** See {@link PatientRowState} (undefined: no such patient): one keyed read of its row. */
export const patientRowState = async (
  store: EventStore,
  patientId: string,
): Promise<PatientRowState | undefined> => {
  const [p] = await store.db.query<PatientRowState>(
    sql`select deleted, erased_at is not null as erased from patients where id = ${patientId}::uuid`,
  );
  return p ? { deleted: p.deleted === true, erased: p.erased === true } : undefined;
};

/**
 * The patient under a sub-resource (encounter, media, history, care team)
 * is live for this actor: 410 when erased, 404 when soft-deleted and the
 * actor may not see deleted patients. An unknown id passes: the
 * sub-resource's own lookup answers for it.
 */
export const requireLivePatient = async (
  store: EventStore,
  actor: Actor,
  patientId: string,
): Promise<void> => {
  const p = await patientRowState(store, patientId);
  if (p?.erased) throw new GoneError("the patient was erased");
  if (p?.deleted && !can(actor, "patient.see_deleted")) throw new NotFoundError("no such patient");
};

/** The patient record (as of `asOf`, when given), or 404 when the actor may not see it. */
export const visiblePatient = async (
  store: EventStore,
  actor: Actor,
  id: string,
  now: Date,
  asOf?: Date,
): Promise<PatientView> => {
  const p = await loadPatient(store, id, now, asOf);
  if (!p || (p.deleted && !can(actor, "patient.see_deleted"))) {
    throw new NotFoundError("no such patient");
  }
  return p;
};

/** The media item, or 404 when the actor may not see it; `unseal: false` skips the PHI. */
export const visibleMedia = async (
  store: EventStore,
  actor: Actor,
  id: string,
  opts: { unseal?: boolean } = {},
): Promise<MediaRecord> => {
  const m = await loadMedia(store, id, opts);
  if (!m || (m.deleted && !can(actor, "media.see_deleted"))) {
    throw new NotFoundError("no such media");
  }
  return m;
};
