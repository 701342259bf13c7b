import type { ChartKindName } from "../events/chart.ts";
import { type Content, KINDS } from "../src/clinical/chart_kinds.ts";
import { applyChanges } from "../src/domain/chart.ts";
import { erasedId } from "../src/store/shred.ts";
import { sql } from "../src/store/sql.ts";
import type { Projection, ProjectionHandler } from "../src/store/types.ts";

/**
 * A new version of the content (an amendment, a lab test's move): the content
 * and its facets again; a lab result changed since its acknowledgement is
 * unseen again.
 */
const changed: ProjectionHandler = async (db, e) => {
  const d = e.data as Record<string, unknown>;
  const [row] = await db.query<{ content: Content | string | null; created_at: Date }>(
    sql`select content, created_at from chart_entries where id = ${d.entryId}::uuid`,
  );
  if (!row) return;
  const before = typeof row.content === "string" ? JSON.parse(row.content) : row.content;
  const changes = (d.changes ?? null) as Content | null;
  const content = applyChanges(before, changes);
  const kind = KINDS[d.kind as ChartKindName];
  const f = content && kind ? kind.facets(content) : null;
  const unseen = changes !== null && ("results" in changes || "resultText" in changes);
  await db.query(sql`update chart_entries set
      content = ${content === null ? null : JSON.stringify(content)}::jsonb,
      clinical_date = coalesce(${f?.clinicalDate ?? null}::date,
        (created_at at time zone 'UTC')::date),
      critical = ${f?.critical ?? null}, start_date = ${f?.startDate ?? null}::date,
      end_date = ${f?.endDate ?? null}::date, due_date = ${f?.dueDate ?? null}::date,
      status = ${f?.status ?? null}, abnormal = ${f?.abnormal ?? null},
      acknowledged = case when ${unseen}::boolean and acknowledged then false else acknowledged end,
      acknowledged_by = case when ${unseen}::boolean then null else acknowledged_by end,
      acknowledged_by_role = case when ${unseen}::boolean then null else acknowledged_by_role end,
      acknowledged_at = case when ${unseen}::boolean then null else acknowledged_at end,
      version = ${e.streamVersion}, updated_at = ${e.recordedAt}::timestamptz
    where id = ${d.entryId}::uuid`);
};

/**
 * Chart entries (every kind), inline, for lists and their filters: the ids,
 * the patient-entered flag, the current content and what the kind derives
 * from it (clinical date, critical, start and end, next due date, a lab
 * test's status and abnormal flag) and a lab test's acknowledgement (reset
 * when its result changes). History folds the
 * entry's stream. Erasure of the patient deletes their rows; a replay over
 * erased events sees null content and stores none.
 */
export const chartEntries: Projection = {
  name: "chart_entries",
  // 2: lab tests' status, abnormal and acknowledgement
  version: 2,
  mode: "inline",
  tables: ["chart_entries"],
  setup: `create table chart_entries (
    id                uuid primary key,
    patient_id        uuid not null,
    kind              text not null,
    encounter_id      uuid,
    clinic_id         uuid,
    patient_entered   boolean not null,
    created_by        uuid not null,
    created_by_role   text not null,
    content           jsonb,
    clinical_date     date not null,
    critical          boolean,
    start_date        date,
    end_date          date,
    due_date          date,
    status            text,
    abnormal          boolean,
    acknowledged      boolean,
    acknowledged_by   uuid,
    acknowledged_by_role text,
    acknowledged_at   timestamptz,
    entered_in_error  boolean not null default false,
    version           integer not null,
    created_at        timestamptz not null,
    updated_at        timestamptz not null
  );
  create index chart_entries_patient on chart_entries (patient_id, kind, clinical_date, id);
  create index chart_entries_encounter on chart_entries (encounter_id) where encounter_id is not null;
  create index chart_entries_status on chart_entries (patient_id, status) where status is not null;
  create index chart_entries_clinic on chart_entries (clinic_id) where clinic_id is not null;`,
  handlers: {
    ChartEntryRecorded: async (db, e) => {
      const d = e.data as Record<string, unknown>;
      const content = (d.content ?? null) as Content | null;
      const kind = KINDS[d.kind as ChartKindName];
      const f = content && kind ? kind.facets(content) : null;
      const by = d.createdBy as { id: string; role: string };
      const at = e.recordedAt;
      await db.query(sql`insert into chart_entries (id, patient_id, kind, encounter_id, clinic_id,
          patient_entered, created_by, created_by_role, content, clinical_date, critical,
          start_date, end_date, due_date, status, abnormal, acknowledged, version, created_at,
          updated_at)
        values (${d.entryId}::uuid, ${d.patientId}::uuid, ${d.kind}, ${d.encounterId}::uuid,
          ${d.clinicId}::uuid, ${d.patientEntered}, ${by.id}::uuid, ${by.role},
          ${content === null ? null : JSON.stringify(content)}::jsonb,
          coalesce(${f?.clinicalDate ?? null}::date, (${at}::timestamptz at time zone 'UTC')::date),
          ${f?.critical ?? null}, ${f?.startDate ?? null}::date, ${f?.endDate ?? null}::date,
          ${f?.dueDate ?? null}::date, ${f?.status ?? null}, ${f?.abnormal ?? null},
          ${d.kind === "lab-tests" ? false : null}, ${e.streamVersion}, ${at}::timestamptz,
          ${at}::timestamptz)
        on conflict (id) do nothing`);
    },
    ChartEntryAmended: async (db, e) => await changed(db, e),
    LabTestStatusChanged: async (db, e) => await changed(db, e),
    LabResultAcknowledged: async (db, e) => {
      const by = e.data.acknowledgedBy as { id: string; role: string };
      await db.query(sql`update chart_entries set acknowledged = true,
          acknowledged_by = ${by.id}::uuid, acknowledged_by_role = ${by.role},
          acknowledged_at = ${e.recordedAt}::timestamptz,
          version = ${e.streamVersion}, updated_at = ${e.recordedAt}::timestamptz
        where id = ${e.data.entryId}::uuid`);
    },
    ChartEntryEnteredInError: async (db, e) => {
      await db.query(sql`update chart_entries set entered_in_error = true,
          version = ${e.streamVersion}, updated_at = ${e.recordedAt}::timestamptz
        where id = ${e.data.entryId}::uuid`);
    },
    SubjectKeyDestroyed: async (db, e) => {
      const id = erasedId(e.data.subjectId, "patient");
      if (!id) return;
      await db.query(sql`delete from chart_entries where patient_id = ${id}::uuid`);
    },
  },
};
