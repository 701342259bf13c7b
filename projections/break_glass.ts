import { erasedId } from "../src/store/shred.ts";
import { sql } from "../src/store/sql.ts";
import type { Projection } from "../src/store/types.ts";

/**
 * Break-glass uses and their review state, inline (an auditor sees a use
 * the moment it happens, and a second review must see the first). No
 * reason or note: they are the patient's PHI and stay sealed in the log
 * (`break-glass-<id>`). Erasing the patient drops their rows.
 */
export const breakGlass: Projection = {
  name: "break_glass",
  version: 1,
  mode: "inline",
  tables: ["break_glass"],
  setup: `create table break_glass (
    id               uuid primary key,
    patient_id       uuid not null,
    practitioner_id  uuid not null,
    grant_id         uuid not null,
    used_at          timestamptz not null,
    expires_at       timestamptz not null,
    reviewed_at      timestamptz,
    reviewed_by      uuid,
    outcome          text
  );
  create index break_glass_used on break_glass (used_at, id);
  create index break_glass_patient on break_glass (patient_id);`,
  handlers: {
    BreakGlassUsed: async (db, e) => {
      const d = e.data;
      await db.query(sql`insert into break_glass (id, patient_id, practitioner_id, grant_id,
          used_at, expires_at)
        values (${d.breakGlassId}::uuid, ${d.patientId}::uuid, ${d.practitionerId}::uuid,
          ${d.grantId}::uuid, ${e.recordedAt}::timestamptz, ${d.expiresAt}::text::timestamptz)`);
    },
    BreakGlassReviewed: async (db, e) => {
      await db.query(sql`update break_glass set reviewed_at = ${e.recordedAt}::timestamptz,
          reviewed_by = ${e.metadata.actorId ?? null}::uuid, outcome = ${e.data.outcome}
        where id = ${e.data.breakGlassId}::uuid`);
    },
    SubjectKeyDestroyed: async (db, e) => {
      const id = erasedId(e.data.subjectId, "patient");
      if (!id) return;
      await db.query(sql`delete from break_glass where patient_id = ${id}::uuid`);
    },
  },
};
