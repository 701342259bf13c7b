import { createHmac } from "node:crypto";
import type { EventMetadata } from "../../events/metadata.ts";
import type { PatientDemographics } from "../../events/patient.ts";
import type { Actor } from "../auth/policy.ts";
import {
  age,
  decide,
  fold,
  fullName,
  normalize,
  type Patient,
  type PatientCommand,
  patientDecider,
  type PatientInput,
} from "../domain/patient.ts";
import { ConcurrencyError, ConflictError, GoneError, UnavailableError } from "../errors.ts";
import { handleCommand } from "../domain/command_handler.ts";
import type { AppendRequest, EventStore } from "../store/event_store.ts";
import { COLUMNS as EVENT_COLUMNS, decode, type EventRow } from "../store/read.ts";
import { sql } from "../store/sql.ts";
import type { NewEvent, StoredEvent } from "../store/types.ts";
import { timestamp } from "../timestamp.ts";

export const patientStream = (id: string) => `patient-${id}`;

/**
 * How long an MRN claim without its patient is honoured before it may be
 * reclaimed (claims are now written with their patient; see registerPatient).
 */
export const CLAIM_GRACE_MS = 5 * 60_000;

/**
 * The MRN reservation stream. Its id is a keyed digest of the MRN, so the
 * MRN (an identifier, hence PHI) never appears in a stream id.
 */
export const mrnStream = (indexKey: Uint8Array, mrn: string) =>
  `mrn-${createHmac("sha256", indexKey).update(mrn.trim().toUpperCase()).digest("hex")}`;

/** Today's date (UTC) as the deciders take it. */
export const today = (now: Date) => now.toISOString().slice(0, 10);

export interface PatientView extends PatientDemographics {
  id: string;
  fullName: string;
  age: number;
  deleted: boolean;
  createdAt: string;
  updatedAt: string;
  version: number;
}

/** What a view needs of the stream's events besides the fold: when, and the last version. */
type Stamped = Pick<StoredEvent, "recordedAt" | "streamVersion">;

const view = (s: Patient, events: readonly Stamped[], now: Date): PatientView | null => {
  if (s.status === "none") return null;
  if (s.status === "erased") throw new GoneError("the patient was erased");
  return {
    id: s.patientId,
    ...s.data,
    fullName: fullName(s.data),
    age: age(s.data.dateOfBirth, today(now)),
    deleted: s.status === "deleted",
    createdAt: timestamp(events[0]!.recordedAt),
    updatedAt: timestamp(events.at(-1)!.recordedAt),
    version: events.at(-1)!.streamVersion,
  };
};

/** The record folded from its events; with `asOf`, as it stood then. */
export const loadPatient = async (
  store: EventStore,
  id: string,
  now: Date,
  asOf?: Date,
): Promise<PatientView | null> => {
  const events = await store.readStream(patientStream(id), asOf ? { asOf } : {});
  return view(fold(events), events, now);
};

/** What the patients read model says of a record now (see visibility.ts). */
export interface PatientRowState {
  deleted: boolean;
  erased: boolean;
}

/** The subject whose data key seals a patient's PHI. */
const patientSubject = (id: string) => `patient-${id}`;

/**
 * A patient's `patients` row state, its stream (sealed) and its data key's
 * row (wrapped), in one query (one snapshot): what a current read needs
 * before and after the policy check. `row` is undefined when there is no such
 * patient. Nothing is unsealed or unwrapped here: {@link openPatient} does
 * that once the read is allowed, without a key lookup of its own.
 */
export const prefetchPatient = async (
  store: EventStore,
  id: string,
): Promise<{ row: PatientRowState | undefined; events: EventRow[]; key: PrefetchedKey }> => {
  const subject = patientSubject(id);
  const rows = await store.db.query<
    EventRow & { p_deleted: boolean; p_erased: boolean; p_key: string | null }
  >(
    sql`select p.deleted as p_deleted, p.erased_at is not null as p_erased,
        (select k.wrapped_key from subject_keys k where k.subject_id = ${subject}) as p_key,
        ${EVENT_COLUMNS}
      from patients p left join events on events.stream_id = ${patientStream(id)}
      where p.id = ${id}::uuid
      order by events.stream_version`,
  );
  const first = rows[0];
  if (!first) return { row: undefined, events: [], key: { subject, wrapped: null } };
  return {
    row: { deleted: first.p_deleted === true, erased: first.p_erased === true },
    events: rows.filter((r) => r.global_position !== null),
    key: { subject, wrapped: first.p_key ?? null },
  };
};

/** A subject's `subject_keys` row as {@link prefetchPatient} read it (null: destroyed or none). */
export interface PrefetchedKey {
  subject: string;
  wrapped: string | null;
}

/**
 * The record from events {@link prefetchPatient} read: unsealed, folded, as
 * loadPatient answers. With the key row read in the same query, opening the
 * payloads needs no lookup of its own.
 */
export const openPatient = async (
  store: EventStore,
  events: readonly EventRow[],
  now: Date,
  key?: PrefetchedKey,
): Promise<PatientView | null> => {
  if (key && events.length > 0) store.codec.rememberRow(key.subject, key.wrapped);
  const decoded = await decode(store, events, true);
  return view(fold(decoded), decoded, now);
};

/** Runs a patient command through the command handler; returns the new version (the ETag). */
const handle = async (
  store: EventStore,
  id: string,
  cmd: PatientCommand,
  metadata: EventMetadata,
  ifMatch?: number,
): Promise<number> => {
  const r = await handleCommand(store, patientDecider, patientStream(id), cmd, {
    metadata,
    ...(ifMatch !== undefined ? { ifMatch } : {}),
  });
  return r.version;
};

/**
 * Registers a patient. The MRN is claimed in its own stream with
 * "no_stream", in the same transaction as the registration
 * (EventStore.appendMany): of two concurrent registrations with one MRN
 * exactly one is written, and a claim never stands without its patient. A
 * claim without its patient (left by a crash between the two appends of
 * an earlier version, which wrote them one after the other) is reclaimed
 * after {@link CLAIM_GRACE_MS}.
 */
export const registerPatient = async (
  store: EventStore,
  indexKey: Uint8Array,
  input: PatientInput,
  metadata: EventMetadata,
  now: Date,
): Promise<PatientView> => {
  const data = normalize(input);
  const patientId = crypto.randomUUID();
  const cmd: PatientCommand = { type: "RegisterPatient", patientId, data, today: today(now) };
  // validates before anything is claimed; the id is new, so this is the decision on its stream
  const registered = decide(cmd, { status: "none" });
  const claim: NewEvent = { type: "MrnReserved", data: { patientId } };
  const stream = mrnStream(indexKey, data.mrn);
  // The patient's data key is made in memory and stored by this append, in
  // its transaction (AppendOptions.newKey): no commit of its own, and no key
  // is left behind by a registration that fails.
  const newKey = await store.codec.freshKey(patientSubject(patientId));
  // A fresh random id's stream is empty: no need to read it before deciding
  // (handleCommand would); "no_stream" still refuses if it were not.
  const patient: AppendRequest = {
    streamId: patientStream(patientId),
    expected: "no_stream",
    events: registered,
  };
  const register = (claimAt: number | "no_stream") =>
    store.appendMany(
      [{ streamId: stream, expected: claimAt, events: [claim] }, patient],
      metadata,
      { newKey },
    );
  let results;
  try {
    results = await register("no_stream");
  } catch (err) {
    if (!(err instanceof ConcurrencyError) || err.streamId !== stream) throw err;
    const claims = await store.readStream(stream);
    const last = claims.at(-1)!;
    const holder = last.data.patientId as string;
    // a claim is abandoned only if its registration never followed within the
    // grace period (a crash in between); a younger one may still be in flight
    const abandoned = now.getTime() - last.recordedAt.getTime() > CLAIM_GRACE_MS &&
      (await store.streamVersion(patientStream(holder))) === 0;
    if (!abandoned) throw new ConflictError("a patient with that MRN already exists");
    results = await register(claims.length).catch((e) => {
      throw e instanceof ConcurrencyError && e.streamId === stream
        ? new ConflictError("a patient with that MRN already exists")
        : e;
    });
  }
  const r = results[1]!;
  // The stream was empty ("no_stream" held): the record is these events, as
  // stored (the payloads the catalogue validated); no need to read it back.
  const first = r.version - registered.length;
  const stored = registered.map((e, i) => ({
    type: e.type,
    data: r.data[i]!,
    recordedAt: r.recordedAt,
    streamVersion: first + i + 1,
  }));
  return view(fold(stored), stored, now)!;
};

export const updatePatient = async (
  store: EventStore,
  id: string,
  changes: Partial<PatientDemographics>,
  metadata: EventMetadata,
  now: Date,
  ifMatch?: number,
): Promise<PatientView> => {
  await handle(store, id, { type: "UpdatePatient", changes, today: today(now) }, metadata, ifMatch);
  return (await loadPatient(store, id, now))!;
};

/** A PATCH, merged on the record as its stream stands (see the decider). */
export const patchPatient = async (
  store: EventStore,
  id: string,
  patch: Partial<PatientInput>,
  metadata: EventMetadata,
  now: Date,
  ifMatch?: number,
): Promise<PatientView> => {
  await handle(store, id, { type: "PatchPatient", patch, today: today(now) }, metadata, ifMatch);
  return (await loadPatient(store, id, now))!;
};

export const deletePatient = (
  store: EventStore,
  id: string,
  reason: string,
  metadata: EventMetadata,
  ifMatch?: number,
) => handle(store, id, { type: "DeletePatient", reason }, metadata, ifMatch);

export const restorePatient = (store: EventStore, id: string, metadata: EventMetadata) =>
  handle(store, id, { type: "RestorePatient" }, metadata);

/** Whether the patient was erased (its key destroyed; the row is a tombstone). */
export const isErased = async (store: EventStore, patientId: string): Promise<boolean> => {
  const [p] = await store.db.query<{ erased: boolean }>(
    sql`select erased_at is not null as erased from patients where id = ${patientId}::uuid`,
  );
  return p?.erased === true;
};

/**
 * Records a read of PHI. If the event cannot be written the read fails
 * (503): an unaudited PHI read is the one thing we must never do.
 */
export const auditRead = async (
  runtime: { store: EventStore; auditReads: boolean },
  actor: Actor,
  event: NewEvent | NewEvent[],
  metadata: EventMetadata,
): Promise<void> => {
  if (!runtime.auditReads) return; // only benchmarks switch this off, to price auditing
  const store = runtime.store;
  try {
    // several (one answer showing several kinds of record) go in one append
    await store.append(`access-${actor.userId}`, "any", [event].flat(), metadata);
  } catch {
    throw new UnavailableError("the read could not be audited, so it is refused");
  }
};
