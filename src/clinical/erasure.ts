import { endSession } from "../auth/session_commands.ts";
import type { EventMetadata } from "../../events/metadata.ts";
import { handle as handleUser } from "../auth/accounts.ts";
import { ConcurrencyError, GoneError, NotFoundError } from "../errors.ts";
import type { BlobStore } from "../media/blob_store.ts";
import type { EventStore } from "../store/event_store.ts";
import { shredSubject } from "../store/shred.ts";
import { sql } from "../store/sql.ts";
import type { Projection } from "../store/types.ts";
import { timestamp } from "../timestamp.ts";
import {
  compareFootprints,
  patientBlobs,
  readModelFootprint,
  removeBlobs,
  sealedEventCounts,
  type TableErasure,
} from "./erasure_report.ts";

/** What an erasure needs of the runtime. */
export interface ErasureDeps {
  store: EventStore;
  blobs: BlobStore;
  projections: readonly Projection[];
}

/** A destroyed data key and how many events hold fields it sealed (now unreadable). */
export interface DestroyedKey {
  subjectId: string;
  sealedEvents: number;
}

/** What was erased: the answer of `POST /v1/admin/patients/:id/erase`. */
export interface ErasureSummary {
  patientId: string;
  /** When the patient's key was destroyed (the `SubjectKeyDestroyed` event's time). */
  erasedAt: string;
  /** The patient's own accounts, deactivated and erased with the record. */
  userIds: string[];
  /** The keys destroyed: the patient's, then each linked account's. */
  subjectKeys: DestroyedKey[];
  /** Events with fields sealed under those keys (one key seals all of an event's fields). */
  sealedEvents: number;
  /** The patient's media: records whose files are unreadable, their blobs, and those deleted. */
  media: { items: number; blobs: number; blobsDeleted: number };
  /** The inline read models' rows about the patient and the accounts, before and after. */
  readModels: TableErasure[];
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
 * Erasures of one patient running in this process, chained: the next one
 * starts when the last one ended, finds the patient erased and answers Gone
 * at once, so the summary is the one winner's and counts what it did.
 * Across instances the log still lets only one shred the patient's key
 * (`shredOnce`); a loser there answers Gone from the append.
 */
const running = new Map<string, Promise<unknown>>();

const oneAtATime = async <T>(key: string, fn: () => Promise<T>): Promise<T> => {
  const before = running.get(key) ?? Promise.resolve();
  const run = before.then(fn, fn);
  const settled = run.catch(() => {});
  running.set(key, settled);
  try {
    return await run;
  } finally {
    if (running.get(key) === settled) running.delete(key);
  }
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
 *
 * Once the key is gone the patient's blobs (originals and thumbnails) are
 * deleted from the blob directory: they were unreadable already, and a
 * crash between the two leaves only ciphertext nobody can open, which a
 * repeated erasure (answering Gone) or `deno task gc` removes.
 */
export const erasePatient = (
  deps: ErasureDeps,
  patientId: string,
  reason: string,
  metadata: EventMetadata,
): Promise<ErasureSummary> =>
  oneAtATime(patientId, async () => {
    const { store } = deps;
    const db = store.db;
    const [p] = await db.query<{ erased: boolean }>(
      sql`select erased_at is not null as erased from patients where id = ${patientId}::uuid`,
    );
    if (!p) throw new NotFoundError("no such patient");
    if (p.erased) {
      // finishes what a crash may have cut short: the files of an erased patient go
      await removeBlobs(deps.blobs, (await patientBlobs(db, patientId)).addresses);
      throw new GoneError("the patient was erased");
    }
    const linked =
      async () => (await db.query<{ id: string; erased: boolean }>(sql`select id::text as id,
        erased_at is not null as erased from users where patient_id = ${patientId}::uuid
        order by id`));
    const accounts = await linked();
    const tables = deps.projections.filter((x) => x.mode === "inline").flatMap((x) => x.tables);
    const ids = [patientId, ...accounts.map((u) => u.id)];
    const before = await readModelFootprint(db, tables, ids);

    for (const u of accounts.filter((a) => !a.erased)) {
      await deactivate(store, u.id, metadata);
      await endSessions(store, u.id, metadata);
      await shredOnce(store, `user-${u.id}`, reason, metadata);
    }
    const shred = await shredOnce(store, `patient-${patientId}`, reason, metadata);

    const files = await patientBlobs(db, patientId);
    const blobsDeleted = await removeBlobs(deps.blobs, files.addresses);
    const after = await readModelFootprint(db, tables, ids);
    const userIds = (await linked()).map((u) => u.id);
    const counts = await sealedEventCounts(db, patientId, userIds);
    const [at] = await db.query<{ recorded_at: Date | string }>(
      sql`select recorded_at from events where global_position = ${shred.positions[0]!}`,
    );
    return {
      patientId,
      erasedAt: timestamp(at!.recorded_at),
      userIds,
      subjectKeys: [...counts].map(([subjectId, sealedEvents]) => ({ subjectId, sealedEvents })),
      sealedEvents: [...counts.values()].reduce((a, b) => a + b, 0),
      media: { items: files.items, blobs: files.addresses.length, blobsDeleted },
      readModels: compareFootprints(before, after),
    };
  });
