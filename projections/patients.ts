import { erasedId } from "../src/store/shred.ts";
import { sql } from "../src/store/sql.ts";
import type { Projection } from "../src/store/types.ts";

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
};
