import { suppressedView } from "../src/analytics/cells.ts";
import { erasedId } from "../src/store/shred.ts";
import { sql } from "../src/store/sql.ts";
import type { Projection } from "../src/store/types.ts";

/** A two-letter state code, upper-cased; anything else is `other` (free text never becomes a cell). */
const stateOf = (address: unknown): string => {
  const s = (address as { state?: unknown } | null)?.state;
  if (typeof s !== "string") return "unknown";
  const code = s.trim().toUpperCase();
  return /^[A-Z]{2}$/.test(code) ? code : "other";
};

/**
 * Patients (not soft-deleted) by state and 5-year age band, for analysts
 * (`analytics.patients_by_state_age`). The working table holds, per
 * patient, the state code and date of birth; the view turns the birth date
 * into a band (everyone 90 or over in `90+`) on today's date (UTC), so no
 * date of birth reaches the analytics schema. An erased patient's row is
 * deleted; a replay over their erased registration reads no birth date and
 * makes none: live and rebuilt alike, they no longer count.
 */
export const analyticsPatients: Projection = {
  name: "analytics_patients",
  version: 1,
  mode: "async",
  tables: ["analytics_patient_facts"],
  setup: `create table analytics_patient_facts (
    patient_id     uuid primary key,
    state          text not null,
    date_of_birth  date not null,
    deleted        boolean not null default false
  );`,
  handlers: {
    PatientRegistered: async (db, e) => {
      const d = e.data;
      if (e.erasedFields.length > 0 || typeof d.dateOfBirth !== "string") return;
      await db.query(sql`insert into analytics_patient_facts (patient_id, state, date_of_birth)
        values (${d.patientId}::uuid, ${stateOf(d.address)}, ${d.dateOfBirth}::text::date)
        on conflict (patient_id) do nothing`);
    },
    PatientUpdated: async (db, e) => {
      const c = e.data.changes as Record<string, unknown> | null;
      if (!c || e.erasedFields.length > 0) return;
      await db.query(sql`update analytics_patient_facts set
          state = case when ${"address" in c} then ${stateOf(c.address)} else state end,
          date_of_birth = coalesce(${
        typeof c.dateOfBirth === "string" ? c.dateOfBirth : null
      }::text::date, date_of_birth)
        where patient_id = ${e.data.patientId}::uuid`);
    },
    PatientDeleted: async (db, e) => {
      await db.query(sql`update analytics_patient_facts set deleted = true
        where patient_id = ${e.data.patientId}::uuid`);
    },
    PatientRestored: async (db, e) => {
      await db.query(sql`update analytics_patient_facts set deleted = false
        where patient_id = ${e.data.patientId}::uuid`);
    },
    SubjectKeyDestroyed: async (db, e) => {
      const id = erasedId(e.data.subjectId, "patient");
      if (!id) return;
      await db.query(sql`delete from analytics_patient_facts where patient_id = ${id}::uuid`);
    },
  },
  views: [suppressedView({
    name: "patients_by_state_age",
    cells: `select state, age_band, count(*)::int as "count", count(*)::int as patients
      from (
        select state, case when age >= 90 then '90+'
            else (age / 5 * 5)::text || '-' || (age / 5 * 5 + 4)::text end as age_band
        from (
          select state, extract(year from age((now() at time zone 'UTC')::date,
            date_of_birth))::int as age
          from public.analytics_patient_facts where not deleted
        ) a
      ) b group by state, age_band`,
    keys: ["state", "age_band"],
    group: ["state"],
    measures: [],
  })],
};
