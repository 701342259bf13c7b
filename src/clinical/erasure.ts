import { endSession } from "../auth/session_commands.ts";
import type { EventMetadata } from "../../events/metadata.ts";
import { handle as handleUser } from "../auth/accounts.ts";
import { ConcurrencyError, GoneError, NotFoundError } from "../errors.ts";
import type { EventStore } from "../store/event_store.ts";
import { shredSubject } from "../store/shred.ts";
import { sql } from "../store/sql.ts";

export interface ErasureResult {
  patientId: string;
  /** The patient's own accounts, deactivated and erased with the record. */
  userIds: string[];
}

/** A subject is shredded once: a concurrent erasure that got there first wins. */
const shredOnce = (store: EventStore, subject: string, reason: string, metadata: EventMetadata) =>
  shredSubject(store, subject, reason, metadata, "no_stream").catch((err) => {
    throw err instanceof ConcurrencyError ? new GoneError("the patient was erased") : err;
  });

/** Deactivates an account, re-deciding when a concurrent write to it moved its stream on. */
const deactivate = (store: EventStore, userId: string, metadata: EventMetadata) =>
  handleUser(store, userId, [{ type: "SetActive", active: false }], metadata, undefined, 5);

/** Ends the account's open sessions, each with an event saying why (as a refresh would). */
const endSessions = async (store: EventStore, userId: string, metadata: EventMetadata) => {
  const open = await store.db.query<{ id: string }>(sql`select id::text as id from sessions
    where user_id = ${userId}::uuid and ended_at is null`);
  for (const { id } of open) await endSession(store, id, "user_deactivated", metadata);
};

/**
 * Erases a patient (right to erasure): crypto-shreds the record's key, which
 * makes every sealed field of every event about the patient (demographics,
 * encounter reasons, media names, notes, DICOM tags) and every stored file
 * unreadable, and the read models drop what they held of it (each projection
 * handles `SubjectKeyDestroyed`). The `patient` accounts linked to the record
 * are their own subjects: each is deactivated (an event), its sessions are
 * ended (events) and then it is shredded too. Accounts go first, so a failure half-way leaves the patient
 * unerased and the command can simply be repeated (erased accounts are
 * skipped). Of concurrent erasures one succeeds and the others answer Gone.
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
    await deactivate(store, u.id, metadata);
    await endSessions(store, u.id, metadata);
    await shredOnce(store, `user-${u.id}`, reason, metadata);
  }
  await shredOnce(store, `patient-${patientId}`, reason, metadata);
  return { patientId, userIds: users.map((u) => u.id) };
};
