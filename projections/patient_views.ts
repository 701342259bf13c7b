import { erasedId } from "../src/store/shred.ts";
import { sql } from "../src/store/sql.ts";
import type { Projection } from "../src/store/types.ts";

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/**
 * Who last opened which patient's record, and when: one row per (viewer,
 * patient) from the `PatientViewed` events in each user's own
 * `access-<userId>` stream. The clinician dashboard's "recently viewed"
 * reads it (and filters it through the policy, so a patient the viewer may
 * no longer read never shows). Ids and times only, no PHI.
 *
 * Async: reads are the hottest appends and must not pay for this; the
 * dashboard may trail the log by a moment. Erasure of the patient drops
 * their rows (the log keeps the reads).
 */
export const patientViews: Projection = {
  name: "patient_views",
  version: 1,
  mode: "async",
  tables: ["patient_views"],
  setup: `create table patient_views (
    viewer_id       uuid not null,
    patient_id      uuid not null,
    view_count      integer not null,
    last_viewed_at  timestamptz not null,
    last_position   bigint not null,
    primary key (viewer_id, patient_id)
  );
  create index patient_views_recent on patient_views (viewer_id, last_viewed_at desc, patient_id);
  create index patient_views_patient on patient_views (patient_id);`,
  handlers: {
    PatientViewed: async (db, e) => {
      // the stream is the reader's own: `access-<userId>`
      const viewer = e.streamId.startsWith("access-") ? e.streamId.slice("access-".length) : "";
      if (!UUID.test(viewer)) return; // not a user's reads (a CLI operator's): nothing to show
      await db.query(sql`insert into patient_views (viewer_id, patient_id, view_count,
          last_viewed_at, last_position)
        values (${viewer}::uuid, ${e.data.patientId}::uuid, 1, ${e.recordedAt}::timestamptz,
          ${e.globalPosition})
        on conflict (viewer_id, patient_id) do update set
          view_count = patient_views.view_count + 1,
          last_viewed_at = greatest(patient_views.last_viewed_at, excluded.last_viewed_at),
          last_position = greatest(patient_views.last_position, excluded.last_position)`);
    },
    SubjectKeyDestroyed: async (db, e) => {
      const id = erasedId(e.data.subjectId, "patient");
      if (!id) return;
      await db.query(sql`delete from patient_views where patient_id = ${id}::uuid`);
    },
  },
};
