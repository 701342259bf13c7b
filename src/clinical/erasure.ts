import type { EventMetadata } from "../../events/metadata.ts";
import { handle as handleUser } from "../auth/accounts.ts";
import { GoneError, NotFoundError } from "../errors.ts";
import type { EventStore } from "../store/event_store.ts";
import { shredSubject } from "../store/shred.ts";
import { sql } from "../store/sql.ts";

export interface ErasureResult {
  patientId: string;
  /** The patient's own accounts, deactivated and erased with the record. */
  userIds: string[];
}

/**
 * Erases a patient (right to erasure): crypto-shreds the record's key, which
 * makes every sealed field of every event about the patient (demographics,
 * encounter reasons, media names, notes, DICOM tags) and every stored file
 * unreadable, and the read models drop what they held of it (each projection
 * handles `SubjectKeyDestroyed`). The `patient` accounts linked to the record
 * are their own subjects: each is deactivated (an event) and then shredded
 * too. Accounts go first, so a failure half-way leaves the patient
 * unerased and the command can simply be repeated.
 */
export const erasePatient = async (
  store: EventStore,
  patientId: string,
  reason: string,
  metadata: EventMetadata,
): Promise<ErasureResult> => {
  const [p] = await store.db.query<{ erased: boolean }>(
    sql`select erased_at is not null as erased from patients where id = ${patientId}::uuid`,
  );
  if (!p) throw new NotFoundError("no such patient");
  if (p.erased) throw new GoneError("the patient was erased");
  const users = await store.db.query<{ id: string }>(sql`select id::text as id from users
    where patient_id = ${patientId}::uuid and erased_at is null order by id`);
  for (const u of users) {
    await handleUser(store, u.id, [{ type: "SetActive", active: false }], metadata);
    await shredSubject(store, `user-${u.id}`, reason, metadata);
  }
  await shredSubject(store, `patient-${patientId}`, reason, metadata);
  return { patientId, userIds: users.map((u) => u.id) };
};
