import { erasedId } from "../src/store/shred.ts";
import { sql } from "../src/store/sql.ts";
import type { Db } from "../src/store/db.ts";
import type { FoldedEvent, Projection } from "../src/store/types.ts";

/**
 * What patient search, lists and the policy need, inline so the API reads
 * its own writes: the names, MRN, email, date of birth and place used to
 * find a record, the soft-delete flag, and the care team. Full records are
 * folded from their sealed events when read.
 *
 * Erasure (`SubjectKeyDestroyed` of `patient-<id>`) nulls every PHI column
 * and stamps `erased_at`: the row stays as a tombstone so the id still
 * resolves (to 410 Gone), and lists omit it. A replay over erased events
 * reads the sealed fields as null, so those columns are nullable.
 */
export const patients: Projection = {
  name: "patients",
  version: 2, // 2: erasure (nullable PHI columns, erased_at)
  mode: "inline",
  tables: ["patients", "care_team"],
  setup: `create table patients (
    id             uuid primary key,
    mrn            text,
    first_name     text,
    last_name      text,
    email          text,
    date_of_birth  date,
    gender         text,
    city           text,
    state          text,
    deleted        boolean not null default false,
    version        integer not null,
    created_at     timestamptz not null,
    updated_at     timestamptz not null,
    erased_at      timestamptz
  );
  create index patients_first on patients (lower(first_name) text_pattern_ops, id);
  create index patients_last on patients (lower(last_name) text_pattern_ops, id);
  create index patients_mrn on patients (lower(mrn) text_pattern_ops);
  create index patients_email on patients (email text_pattern_ops);
  create table care_team (
    patient_id       uuid not null,
    practitioner_id  uuid not null,
    primary key (patient_id, practitioner_id)
  );
  create index care_team_practitioner on care_team (practitioner_id);`,
  handlers: {
    PatientRegistered: async (db, e) => {
      const d = e.data as Record<string, unknown>;
      const address = d.address as { city?: string; state?: string } | null;
      const at = e.recordedAt;
      await db.query(sql`insert into patients (id, mrn, first_name, last_name, email,
          date_of_birth, gender, city, state, version, created_at, updated_at)
        values (${d.patientId}::uuid, ${d.mrn}, ${d.firstName}, ${d.lastName}, ${d.email},
          ${d.dateOfBirth}::text::date, ${d.gender}, ${address?.city ?? null},
          ${address?.state ?? null}, ${e.streamVersion}, ${at}::timestamptz,
          ${at}::timestamptz)`);
    },
    PatientUpdated: async (db, e) => {
      const c = (e.data.changes ?? {}) as Record<string, unknown>;
      const has = (k: string) => k in c;
      const address = c.address as { city?: string; state?: string } | null | undefined;
      await db.query(sql`update patients set
          first_name = case when ${has("firstName")} then ${
        c.firstName ?? null
      } else first_name end,
          last_name = case when ${has("lastName")} then ${c.lastName ?? null} else last_name end,
          email = case when ${has("email")} then ${c.email ?? null} else email end,
          date_of_birth = case when ${has("dateOfBirth")}
            then ${c.dateOfBirth ?? null}::text::date else date_of_birth end,
          gender = case when ${has("gender")} then ${c.gender ?? null} else gender end,
          city = case when ${has("address")} then ${address?.city ?? null} else city end,
          state = case when ${has("address")} then ${address?.state ?? null} else state end,
          version = ${e.streamVersion},
          updated_at = ${e.recordedAt}::timestamptz
        where id = ${e.data.patientId}::uuid`);
    },
    PatientDeleted: async (db, e) => {
      await db.query(sql`update patients set deleted = true, version = ${e.streamVersion},
        updated_at = ${e.recordedAt}::timestamptz
        where id = ${e.data.patientId}::uuid`);
    },
    PatientRestored: async (db, e) => {
      await db.query(sql`update patients set deleted = false, version = ${e.streamVersion},
        updated_at = ${e.recordedAt}::timestamptz
        where id = ${e.data.patientId}::uuid`);
    },
    CareTeamMemberAdded: async (db, e) => {
      await db.query(sql`insert into care_team (patient_id, practitioner_id)
        values (${e.data.patientId}::uuid, ${e.data.practitionerId}::uuid) on conflict do nothing`);
    },
    SubjectKeyDestroyed: async (db, e) => {
      const id = erasedId(e.data.subjectId, "patient");
      if (!id) return;
      await db.query(sql`update patients set mrn = null, first_name = null, last_name = null,
          email = null, date_of_birth = null, gender = null, city = null, state = null,
          erased_at = coalesce(erased_at, ${e.recordedAt}::timestamptz)
        where id = ${id}::uuid`);
      // who treated an erased patient is no longer anyone's business here (the log keeps it)
      await db.query(sql`delete from care_team where patient_id = ${id}::uuid`);
    },
    CareTeamMemberRemoved: async (db, e) => {
      await db.query(sql`delete from care_team where patient_id = ${e.data.patientId}::uuid
        and practitioner_id = ${e.data.practitionerId}::uuid`);
    },
  },
  foldBatch: (db, events) => foldPatients(db, events),
  writeOnly: true,
};

/** A patients row as the handlers above leave it. */
interface PatientRow {
  id: string;
  mrn: unknown;
  first_name: unknown;
  last_name: unknown;
  email: unknown;
  date_of_birth: unknown;
  gender: unknown;
  city: unknown;
  state: unknown;
  deleted: boolean;
  version: number;
  created_at: string;
  updated_at: string;
  erased_at: string | null;
}

const PHI_COLUMNS = [
  "mrn",
  "first_name",
  "last_name",
  "email",
  "date_of_birth",
  "gender",
  "city",
  "state",
] as const;

/** The columns a `PatientUpdated` sets, as its handler does. */
const updatedColumns = (e: FoldedEvent): Record<string, unknown> => {
  const c = (e.data.changes ?? {}) as Record<string, unknown>;
  const out: Record<string, unknown> = {};
  if ("firstName" in c) out.first_name = c.firstName ?? null;
  if ("lastName" in c) out.last_name = c.lastName ?? null;
  if ("email" in c) out.email = c.email ?? null;
  if ("dateOfBirth" in c) out.date_of_birth = c.dateOfBirth ?? null;
  if ("gender" in c) out.gender = c.gender ?? null;
  if ("address" in c) {
    const address = c.address as { city?: string; state?: string } | null | undefined;
    out.city = address?.city ?? null;
    out.state = address?.state ?? null;
  }
  out.version = e.streamVersion;
  out.updated_at = e.recordedAt.toISOString();
  return out;
};

/**
 * A page of events folded in four statements instead of one per event, with
 * the rows the handlers leave (tests/patients_fold_test.ts compares them):
 * the changes to each patient are merged in log order first. Patients
 * registered in the page are inserted whole; the others get one update of
 * the columns the page set (an erasure nulls every PHI column and stamps
 * `erased_at` once, as its handler does). Care-team pairs end as their last
 * add or remove in the page says, after an erasure's removal of them all.
 */
const foldPatients = async (db: Db, events: readonly FoldedEvent[]): Promise<void> => {
  const created = new Map<string, PatientRow>();
  /** Columns to set on rows from before this page; `erased_at` is set only when null. */
  const patches = new Map<string, Record<string, unknown>>();
  const pairs = new Map<string, { patient: string; practitioner: string; add: boolean }>();
  const clearTeams = new Set<string>();
  const change = (id: string, cols: Record<string, unknown>) => {
    const row = created.get(id);
    if (row) {
      for (const [k, v] of Object.entries(cols)) {
        if (k === "erased_at") row.erased_at ??= v as string;
        else (row as unknown as Record<string, unknown>)[k] = v;
      }
      return;
    }
    const patch = patches.get(id) ?? {};
    for (const [k, v] of Object.entries(cols)) {
      if (!(k === "erased_at" && "erased_at" in patch)) patch[k] = v;
    }
    patches.set(id, patch);
  };
  for (const e of events) {
    const d = e.data as Record<string, unknown>;
    const at = e.recordedAt.toISOString();
    switch (e.type) {
      case "PatientRegistered": {
        const address = d.address as { city?: string; state?: string } | null;
        const id = String(d.patientId);
        if (created.has(id)) throw new Error("patient registered twice");
        created.set(id, {
          id,
          mrn: d.mrn,
          first_name: d.firstName,
          last_name: d.lastName,
          email: d.email,
          date_of_birth: d.dateOfBirth,
          gender: d.gender,
          city: address?.city ?? null,
          state: address?.state ?? null,
          deleted: false,
          version: e.streamVersion,
          created_at: at,
          updated_at: at,
          erased_at: null,
        });
        break;
      }
      case "PatientUpdated":
        change(String(d.patientId), updatedColumns(e));
        break;
      case "PatientDeleted":
      case "PatientRestored":
        change(String(d.patientId), {
          deleted: e.type === "PatientDeleted",
          version: e.streamVersion,
          updated_at: at,
        });
        break;
      case "CareTeamMemberAdded":
      case "CareTeamMemberRemoved": {
        const patient = String(d.patientId), practitioner = String(d.practitionerId);
        pairs.set(`${patient}/${practitioner}`, {
          patient,
          practitioner,
          add: e.type === "CareTeamMemberAdded",
        });
        break;
      }
      case "SubjectKeyDestroyed": {
        const id = erasedId(d.subjectId, "patient");
        if (!id) break;
        change(id, { ...Object.fromEntries(PHI_COLUMNS.map((c) => [c, null])), erased_at: at });
        clearTeams.add(id);
        for (const [k, pair] of pairs) if (pair.patient === id) pairs.delete(k);
        break;
      }
    }
  }
  if (created.size > 0) {
    await db.query(sql`insert into patients (id, mrn, first_name, last_name, email,
        date_of_birth, gender, city, state, deleted, version, created_at, updated_at, erased_at)
      select x.id, x.mrn, x.first_name, x.last_name, x.email, x.date_of_birth, x.gender, x.city,
        x.state, x.deleted, x.version, x.created_at, x.updated_at, x.erased_at
      from jsonb_to_recordset(${JSON.stringify([...created.values()])}::text::jsonb) as x(
        id uuid, mrn text, first_name text, last_name text, email text, date_of_birth date,
        gender text, city text, state text, deleted boolean, version integer,
        created_at timestamptz, updated_at timestamptz, erased_at timestamptz)`);
  }
  if (patches.size > 0) {
    const rows = [...patches].map(([id, s]) => ({ id, s }));
    // `x.s ? 'col'`: whether the page set that column (to null, maybe)
    await db.query(sql`update patients p set
        mrn = case when x.s ? 'mrn' then x.s->>'mrn' else p.mrn end,
        first_name = case when x.s ? 'first_name' then x.s->>'first_name' else p.first_name end,
        last_name = case when x.s ? 'last_name' then x.s->>'last_name' else p.last_name end,
        email = case when x.s ? 'email' then x.s->>'email' else p.email end,
        date_of_birth = case when x.s ? 'date_of_birth'
          then (x.s->>'date_of_birth')::date else p.date_of_birth end,
        gender = case when x.s ? 'gender' then x.s->>'gender' else p.gender end,
        city = case when x.s ? 'city' then x.s->>'city' else p.city end,
        state = case when x.s ? 'state' then x.s->>'state' else p.state end,
        deleted = case when x.s ? 'deleted' then (x.s->>'deleted')::boolean else p.deleted end,
        version = case when x.s ? 'version' then (x.s->>'version')::integer else p.version end,
        updated_at = case when x.s ? 'updated_at'
          then (x.s->>'updated_at')::timestamptz else p.updated_at end,
        erased_at = case when x.s ? 'erased_at'
          then coalesce(p.erased_at, (x.s->>'erased_at')::timestamptz) else p.erased_at end
      from jsonb_to_recordset(${JSON.stringify(rows)}::text::jsonb) as x(id uuid, s jsonb)
      where p.id = x.id`);
  }
  if (clearTeams.size > 0) {
    await db.query(sql`delete from care_team where patient_id = any(${[...clearTeams]}::uuid[])`);
  }
  const removed = [...pairs.values()].filter((p) => !p.add);
  if (removed.length > 0) {
    await db.query(sql`delete from care_team c
      using unnest(${removed.map((p) => p.patient)}::uuid[],
        ${removed.map((p) => p.practitioner)}::uuid[]) as x(patient_id, practitioner_id)
      where c.patient_id = x.patient_id and c.practitioner_id = x.practitioner_id`);
  }
  const added = [...pairs.values()].filter((p) => p.add);
  if (added.length > 0) {
    await db.query(sql`insert into care_team (patient_id, practitioner_id)
      select * from unnest(${added.map((p) => p.patient)}::uuid[],
        ${added.map((p) => p.practitioner)}::uuid[])
      on conflict do nothing`);
  }
};
