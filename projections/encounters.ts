import { sql } from "../src/store/sql.ts";
import type { Projection } from "../src/store/types.ts";

/**
 * Encounters by patient and practitioner, inline: lists, status and the
 * "encounter practitioner" relation the policy asks about (which needs when
 * an encounter finished: its practitioner stays related for a while after).
 * The reason stays sealed in the log; reads fold it from the encounter's stream.
 */
export const encounters: Projection = {
  name: "encounters",
  version: 2, // 2: finished_at
  mode: "inline",
  tables: ["encounters"],
  setup: `create table encounters (
    id               uuid primary key,
    patient_id       uuid not null,
    practitioner_id  uuid not null,
    starts_at        timestamptz not null,
    status           text not null,
    version          integer not null,
    created_at       timestamptz not null,
    updated_at       timestamptz not null,
    finished_at      timestamptz
  );
  create index encounters_patient on encounters (patient_id, starts_at);
  create index encounters_practitioner on encounters (practitioner_id, patient_id);`,
  handlers: {
    EncounterPlanned: async (db, e) => {
      const d = e.data;
      const at = e.recordedAt;
      await db.query(sql`insert into encounters (id, patient_id, practitioner_id, starts_at, status,
          version, created_at, updated_at)
        values (${d.encounterId}::uuid, ${d.patientId}::uuid, ${d.practitionerId}::uuid,
          ${d.startsAt}::text::timestamptz, 'planned', ${e.streamVersion}, ${at}::timestamptz,
          ${at}::timestamptz)`);
    },
    EncounterStatusChanged: async (db, e) => {
      const at = e.recordedAt;
      await db.query(sql`update encounters set status = ${e.data.to}, version = ${e.streamVersion},
        updated_at = ${at}::timestamptz,
        finished_at = ${e.data.to === "finished" ? at : null}::timestamptz
        where id = ${e.data.encounterId}::uuid`);
    },
  },
};
