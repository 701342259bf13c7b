/**
 * The clinician dashboard: one practitioner's working set, in bounded
 * sections, every one of them limited to patients the policy lets them read
 * (`listFilter`, the same rule as `GET /v1/patients`), live ones only
 * (neither soft-deleted nor erased). What each section holds and why is in
 * the README (_Clinician dashboard_).
 *
 * @module
 */
import type { NewEvent } from "../store/types.ts";
import { type Actor, listFilter, type RelationRule, usableGrants } from "../auth/policy.ts";
import type { EventStore } from "../store/event_store.ts";
import { type Query, sql } from "../store/sql.ts";
import { timestamp } from "../timestamp.ts";
import type { EncounterStatus } from "../domain/encounter.ts";
import { listPendingRequests, type PendingRequestItem } from "./access_requests.ts";
import type { GrantView } from "./grants.ts";

/** At most this many items per section (each section also says how many there are). */
export const DASHBOARD_LIMIT = 10;
/** A usable grant "about to expire": it ends within this many hours. */
export const GRANT_EXPIRY_HOURS = 24;
/** A vaccination "due": its latest dose's next due date is past or within this many days. */
export const VACCINATION_DUE_DAYS = 30;

/** Who an item is about: the names a clinician recognises the record by. */
export interface PatientRef {
  id: string;
  mrn: string | null;
  firstName: string | null;
  lastName: string | null;
}

interface Section<T> {
  items: T[];
  total: number;
}

export interface Dashboard {
  patientCount: number;
  recentlyViewed: Section<{ patient: PatientRef; lastViewedAt: string; views: number }>;
  encountersToday: Section<EncounterItem>;
  upcomingEncounters: Section<EncounterItem>;
  recentUploads: Section<{
    id: string;
    patient: PatientRef;
    encounterId: string;
    kind: string;
    category: string;
    contentType: string;
    uploaderId: string;
    createdAt: string;
  }>;
  pendingAccessRequests: Section<PendingRequestItem>;
  expiringGrants: Section<{
    id: string;
    patient: PatientRef;
    grantee: { kind: GrantView["grantee"]["kind"]; id: string };
    source: GrantView["source"];
    expiresAt: string;
  }>;
  abnormalResults: Section<{
    id: string;
    patient: PatientRef;
    encounterId: string | null;
    testName: string | null;
    abnormal: Record<string, unknown>[];
    updatedAt: string;
  }>;
  vaccinationsDue: Section<{
    id: string;
    patient: PatientRef;
    vaccineName: string | null;
    administeredAt: string | null;
    nextDueDate: string;
    overdue: boolean;
  }>;
}

export interface EncounterItem {
  id: string;
  patient: PatientRef;
  startsAt: string;
  status: EncounterStatus;
}

interface PatientCols {
  patient_id: string;
  mrn: string | null;
  first_name: string | null;
  last_name: string | null;
}

const patientRef = (r: PatientCols): PatientRef => ({
  id: r.patient_id,
  mrn: r.mrn,
  firstName: r.first_name,
  lastName: r.last_name,
});

const PATIENT_COLS = sql`patients.id::text as patient_id, patients.mrn, patients.first_name,
  patients.last_name`;

/**
 * An entry's content as a JSON object: `chart_entries` stores it as a JSON
 * string (jsonb scalar) from a text parameter, so `->>` needs it unwrapped.
 */
const CONTENT = sql`(case jsonb_typeof(c.content) when 'string' then (c.content #>> '{}')::jsonb
  else c.content end)`;

const addDays = (day: string, n: number) =>
  new Date(Date.parse(`${day}T00:00:00Z`) + n * 86_400_000).toISOString().slice(0, 10);

const count = async (store: EventStore, q: Query): Promise<number> => {
  const [r] = await store.db.query<{ n: number }>(sql`select count(*)::int as n ${q}`);
  return Number(r?.n ?? 0);
};

/**
 * The dashboard of a practitioner as of `rule.now`. Reads only: the caller
 * audits what it shows ({@link dashboardReads}) before answering.
 */
export const loadDashboard = async (
  store: EventStore,
  actor: Actor,
  rule: RelationRule,
): Promise<Dashboard> => {
  const me = actor.userId;
  const now = rule.now;
  // a role that reads no patient gets `false`; one that reads all (never a practitioner) `true`
  const scope = listFilter(actor, rule) ?? sql`true`;
  const visible = sql`patients.erased_at is null and not patients.deleted and ${scope}`;
  const today = now.toISOString().slice(0, 10);
  const dayStart = new Date(`${today}T00:00:00Z`);
  const dayEnd = new Date(`${addDays(today, 1)}T00:00:00Z`);
  const limit = DASHBOARD_LIMIT;

  // recently viewed: my own PatientViewed events (the async patient_views read model)
  const viewedFrom = sql`from patient_views v join patients on patients.id = v.patient_id
    where v.viewer_id = ${me}::uuid and ${visible}`;
  const viewed = await store.db.query<
    PatientCols & { last_viewed_at: Date | string; view_count: number }
  >(sql`select ${PATIENT_COLS}, v.last_viewed_at, v.view_count ${viewedFrom}
    order by v.last_viewed_at desc, v.last_position desc limit ${limit}`);

  // my encounters: today's (UTC day, any status but cancelled) and the planned ones after it
  const encounterRows = async (when: Query) => {
    const from = sql`from encounters e join patients on patients.id = e.patient_id
      where e.practitioner_id = ${me}::uuid and ${when} and ${visible}`;
    const rows = await store.db.query<
      PatientCols & { id: string; starts_at: Date; status: EncounterStatus }
    >(
      sql`select e.id::text as id, e.starts_at, e.status, ${PATIENT_COLS} ${from}
        order by e.starts_at, e.id limit ${limit}`,
    );
    return {
      items: rows.map((r) => ({
        id: r.id,
        patient: patientRef(r),
        startsAt: timestamp(r.starts_at),
        status: r.status,
      })),
      total: await count(store, from),
    };
  };
  const encountersToday = await encounterRows(
    sql`e.status <> 'cancelled' and e.starts_at >= ${dayStart}::timestamptz
      and e.starts_at < ${dayEnd}::timestamptz`,
  );
  const upcomingEncounters = await encounterRows(
    sql`e.status = 'planned' and e.starts_at >= ${dayEnd}::timestamptz`,
  );

  // uploads on my encounters, newest first
  const uploadsFrom = sql`from media m join encounters e on e.id = m.encounter_id
      join patients on patients.id = m.patient_id
    where e.practitioner_id = ${me}::uuid and not m.deleted and ${visible}`;
  const uploads = await store.db.query<
    PatientCols & {
      id: string;
      encounter_id: string;
      kind: string;
      category: string;
      content_type: string;
      uploader_id: string;
      created_at: Date;
    }
  >(sql`select m.id::text as id, m.encounter_id::text as encounter_id, m.kind, m.category,
      m.content_type, m.uploader_id::text as uploader_id, m.created_at, ${PATIENT_COLS}
    ${uploadsFrom} order by m.created_at desc, m.id desc limit ${limit}`);

  // usable grants (to me or my clinics) that end within GRANT_EXPIRY_HOURS, soonest first
  const expiryLimit = new Date(now.getTime() + GRANT_EXPIRY_HOURS * 3_600_000);
  const grantsFrom = sql`from access_grants g join patients on patients.id = g.patient_id
    where g.id in (select g.id ${usableGrants(actor, rule)})
      and g.expires_at <= ${expiryLimit}::timestamptz
      and patients.erased_at is null and not patients.deleted`;
  const grants = await store.db.query<
    PatientCols & {
      id: string;
      grantee_kind: GrantView["grantee"]["kind"];
      grantee_id: string;
      source: GrantView["source"];
      expires_at: Date;
    }
  >(sql`select g.id::text as id, g.grantee_kind, g.grantee_id::text as grantee_id, g.source,
      g.expires_at, ${PATIENT_COLS} ${grantsFrom}
    order by g.expires_at, g.id limit ${limit}`);

  // completed lab tests I ordered with an abnormal result I have not acknowledged
  const labsFrom = sql`from chart_entries c join patients on patients.id = c.patient_id
    where c.kind = 'lab-tests' and c.status = 'completed' and c.abnormal
      and not c.acknowledged and not c.entered_in_error
      and ${CONTENT}->>'orderedById' = ${me} and ${visible}`;
  const labs = await store.db.query<
    PatientCols & {
      id: string;
      encounter_id: string | null;
      content: Record<string, unknown> | string | null;
      updated_at: Date;
    }
  >(sql`select c.id::text as id, c.encounter_id::text as encounter_id, c.content, c.updated_at,
      ${PATIENT_COLS} ${labsFrom} order by c.updated_at desc, c.id desc limit ${limit}`);

  // per patient and vaccine, the latest dose (by when it was given) whose next due date is
  // past or within VACCINATION_DUE_DAYS: a later dose of the same vaccine supersedes it
  const dueBy = addDays(today, VACCINATION_DUE_DAYS);
  const vaccinesFrom = sql`from (
      select distinct on (c.patient_id, lower(${CONTENT}->>'vaccineName'))
        c.id, c.patient_id, c.content, c.due_date
      from chart_entries c join patients on patients.id = c.patient_id
      where c.kind = 'vaccinations' and not c.entered_in_error and ${visible}
      order by c.patient_id, lower(${CONTENT}->>'vaccineName'),
        (${CONTENT}->>'administeredAt')::timestamptz desc, c.created_at desc, c.id desc
    ) latest join patients on patients.id = latest.patient_id
    where latest.due_date is not null and latest.due_date <= ${dueBy}::date`;
  const vaccines = await store.db.query<
    PatientCols & {
      id: string;
      content: Record<string, unknown> | string | null;
      due_date: string;
    }
  >(sql`select latest.id::text as id, latest.content,
      to_char(latest.due_date, 'YYYY-MM-DD') as due_date, ${PATIENT_COLS} ${vaccinesFrom}
    order by latest.due_date, latest.id limit ${limit}`);

  const pending = await listPendingRequests(store, me, now, { limit });
  const contentOf = (c: Record<string, unknown> | string | null) =>
    (typeof c === "string" ? JSON.parse(c) : c ?? {}) as Record<string, unknown>;
  const str = (v: unknown) => typeof v === "string" ? v : null;

  return {
    patientCount: await count(store, sql`from patients where ${visible}`),
    recentlyViewed: {
      items: viewed.map((r) => ({
        patient: patientRef(r),
        lastViewedAt: timestamp(r.last_viewed_at),
        views: Number(r.view_count),
      })),
      total: await count(store, viewedFrom),
    },
    encountersToday,
    upcomingEncounters,
    recentUploads: {
      items: uploads.map((r) => ({
        id: r.id,
        patient: patientRef(r),
        encounterId: r.encounter_id,
        kind: r.kind,
        category: r.category,
        contentType: r.content_type,
        uploaderId: r.uploader_id,
        createdAt: timestamp(r.created_at),
      })),
      total: await count(store, uploadsFrom),
    },
    pendingAccessRequests: { items: pending.items, total: pending.total },
    expiringGrants: {
      items: grants.map((r) => ({
        id: r.id,
        patient: patientRef(r),
        grantee: { kind: r.grantee_kind, id: r.grantee_id },
        source: r.source,
        expiresAt: timestamp(r.expires_at),
      })),
      total: await count(store, grantsFrom),
    },
    abnormalResults: {
      items: labs.map((r) => {
        const c = contentOf(r.content);
        const results = Array.isArray(c.results) ? c.results as Record<string, unknown>[] : [];
        return {
          id: r.id,
          patient: patientRef(r),
          encounterId: r.encounter_id,
          testName: str(c.testName),
          abnormal: results.filter((x) => x?.abnormal === true),
          updatedAt: timestamp(r.updated_at),
        };
      }),
      total: await count(store, labsFrom),
    },
    vaccinationsDue: {
      items: vaccines.map((r) => {
        const c = contentOf(r.content);
        return {
          id: r.id,
          patient: patientRef(r),
          vaccineName: str(c.vaccineName),
          administeredAt: str(c.administeredAt),
          nextDueDate: r.due_date,
          overdue: r.due_date < today,
        };
      }),
      total: await count(store, vaccinesFrom),
    },
  };
};

/**
 * The access events a dashboard's answer is, as the single-resource routes
 * record them: `PatientsSearched` with every patient whose name it shows,
 * `EncountersListed` per patient, `MediaListed` per patient and encounter,
 * `ChartEntriesListed` per patient for lab tests and for vaccinations, and
 * `GrantsViewed` for the expiring grants. Pending access requests carry
 * ids only (no PHI), as on `GET /v1/me/access-requests`, which records none.
 */
export const dashboardReads = (d: Dashboard): NewEvent[] => {
  const patients = new Set<string>();
  const group = <T>(items: T[], key: (t: T) => string) => {
    const m = new Map<string, T[]>();
    for (const i of items) m.set(key(i), [...(m.get(key(i)) ?? []), i]);
    return m;
  };
  const encounters = [...d.encountersToday.items, ...d.upcomingEncounters.items];
  for (
    const i of [
      ...d.recentlyViewed.items,
      ...encounters,
      ...d.recentUploads.items,
      ...d.expiringGrants.items,
      ...d.abnormalResults.items,
      ...d.vaccinationsDue.items,
    ]
  ) patients.add(i.patient.id);
  const events: NewEvent[] = [{
    type: "PatientsSearched",
    data: { patientIds: [...patients], total: patients.size },
  }];
  for (const [patientId, items] of group(encounters, (e) => e.patient.id)) {
    events.push({
      type: "EncountersListed",
      data: { patientId, encounterIds: items.map((e) => e.id) },
    });
  }
  for (
    const items of group(d.recentUploads.items, (m) => `${m.patient.id}/${m.encounterId}`)
      .values()
  ) {
    events.push({
      type: "MediaListed",
      data: {
        patientId: items[0]!.patient.id,
        encounterId: items[0]!.encounterId,
        mediaIds: items.map((m) => m.id),
      },
    });
  }
  for (
    const [kind, entries] of [
      ["lab-tests", d.abnormalResults.items],
      ["vaccinations", d.vaccinationsDue.items],
    ] as const
  ) {
    for (
      const [patientId, items] of group<{ id: string; patient: PatientRef }>(
        [...entries],
        (e) => e.patient.id,
      )
    ) {
      events.push({
        type: "ChartEntriesListed",
        data: { patientId, kind, encounterId: null, entryIds: items.map((e) => e.id) },
      });
    }
  }
  if (d.expiringGrants.items.length > 0) {
    events.push({
      type: "GrantsViewed",
      data: {
        patientIds: [...new Set(d.expiringGrants.items.map((g) => g.patient.id))],
        grantIds: d.expiringGrants.items.map((g) => g.id),
      },
    });
  }
  return events;
};
