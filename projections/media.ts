import { erasedId } from "../src/store/shred.ts";
import { sql } from "../src/store/sql.ts";
import type { Projection } from "../src/store/types.ts";

/**
 * Media by patient and encounter, inline so an upload is listed at once:
 * what lists, filters, statistics and `deno task gc` need. File names,
 * notes and the DICOM header stay sealed in the log; of the DICOM header
 * only modality and study date are kept here, for lists. Erasing the
 * patient nulls those two (a replay reads the sealed header as null too);
 * the blobs are already unreadable without the patient's key.
 */
export const media: Projection = {
  name: "media",
  version: 2, // 2: erasure nulls the DICOM columns
  mode: "inline",
  tables: ["media"],
  setup: `create table media (
    id             uuid primary key,
    patient_id     uuid not null,
    encounter_id   uuid,
    uploader_id    uuid not null,
    kind           text not null,
    category       text not null,
    content_type   text not null,
    size           bigint not null,
    sha256         text not null,
    blob           text not null,
    thumb_blob     text,
    scan_status    text not null,
    modality       text,
    study_date     text,
    deleted        boolean not null default false,
    version        integer not null,
    created_at     timestamptz not null,
    updated_at     timestamptz not null
  );
  create index media_patient on media (patient_id, created_at desc, id desc);
  create index media_encounter on media (encounter_id, created_at desc, id desc);
  create index media_blob on media (blob);
  create index media_thumb_blob on media (thumb_blob);`,
  handlers: {
    MediaUploaded: async (db, e) => {
      const d = e.data as Record<string, unknown>;
      const thumb = d.thumbnail as { blob: string } | null;
      const dicom = d.dicom as Record<string, string | null> | null;
      const scan = d.scan as { status: string };
      const at = e.recordedAt;
      await db.query(sql`insert into media (id, patient_id, encounter_id, uploader_id, kind,
          category, content_type, size, sha256, blob, thumb_blob, scan_status, modality,
          study_date, version, created_at, updated_at)
        values (${d.mediaId}::uuid, ${d.patientId}::uuid, ${d.encounterId}::uuid,
          ${d.uploaderId}::uuid, ${d.kind}, ${d.category}, ${d.contentType}, ${d.size},
          ${d.sha256}, ${d.blob}, ${thumb?.blob ?? null}, ${scan.status},
          ${dicom?.modality ?? null}, ${dicom?.studyDate ?? null}, ${e.streamVersion},
          ${at}::timestamptz, ${at}::timestamptz)`);
    },
    SubjectKeyDestroyed: async (db, e) => {
      const id = erasedId(e.data.subjectId, "patient");
      if (!id) return;
      await db.query(sql`update media set modality = null, study_date = null
        where patient_id = ${id}::uuid`);
    },
    MediaDeleted: async (db, e) => {
      await db.query(sql`update media set deleted = true, version = ${e.streamVersion},
        updated_at = ${e.recordedAt}::timestamptz
        where id = ${e.data.mediaId}::uuid`);
    },
    MediaRestored: async (db, e) => {
      await db.query(sql`update media set deleted = false, version = ${e.streamVersion},
        updated_at = ${e.recordedAt}::timestamptz
        where id = ${e.data.mediaId}::uuid`);
    },
  },
};
