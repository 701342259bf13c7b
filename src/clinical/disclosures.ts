import { z } from "zod";
import type { EventStore } from "../store/event_store.ts";
import { int, type Query, sql } from "../store/sql.ts";
import { timestamp } from "../timestamp.ts";
import { touchesPatient } from "./audit_trail.ts";

/**
 * The accounting of disclosures of one patient's record: every access to
 * their PHI by anyone but the patient, from the log alone, grouped by
 * (actor, role, purpose of use, grant).
 *
 * What counts ({@link DISCLOSURES}, each with the brief description shown
 * in `what`): the audited reads that name the patient (their own events or
 * list reads whose `patientIds` hold them), audit surface uses that name
 * them (an `AuditQueried` or `AuditExported` whose filters hold their id,
 * a stream view of their record), a break-glass opening, and writes of their record (the
 * patient stream, care team, proxies, encounters, media). Not counted:
 * denials (`AccessDenied`: nothing was disclosed), refused uploads, grant
 * and access-code bookkeeping (the reads made through a grant are what is
 * disclosed, and they name it), MRN claims (part of a registration), the
 * key destruction of an erasure, and everything done by one of the
 * patient's own user accounts (`users.patient_id`).
 */
export const DISCLOSURES: Readonly<Record<string, string>> = {
  // reads
  PatientViewed: "demographics",
  PatientsSearched: "patient list",
  PatientHistoryViewed: "record history",
  CareTeamViewed: "care team",
  EncounterViewed: "encounter",
  EncountersListed: "encounter list",
  MediaViewed: "media details",
  MediaDownloaded: "media download",
  MediaThumbnailViewed: "media thumbnail",
  MediaListed: "media list",
  ProxiesViewed: "proxy list",
  GrantsViewed: "grants",
  BreakGlassViewed: "break-glass reasons",
  BreakGlassUsed: "break-glass access",
  AuditStreamViewed: "record as of a time",
  "AuditQueried:events": "audit trail query",
  "AuditQueried:disclosures": "disclosure report",
  "AuditQueried:replay": "record replay",
  AuditExported: "audit export",
  // writes
  PatientRegistered: "registration",
  PatientUpdated: "demographics update",
  PatientDeleted: "record deletion",
  PatientRestored: "record restore",
  CareTeamMemberAdded: "care team change",
  CareTeamMemberRemoved: "care team change",
  ProxyAdded: "proxy change",
  ProxyRemoved: "proxy change",
  EncounterPlanned: "encounter created",
  EncounterStatusChanged: "encounter status change",
  MediaUploaded: "media upload",
  MediaDeleted: "media deletion",
  MediaRestored: "media restore",
};

/** Types whose use is the audit surface's (purpose `audit` whoever the actor). */
const AUDIT_SURFACE = ["AuditQueried", "AuditStreamViewed", "AuditExported", "BreakGlassViewed"];

export const PURPOSES = [
  "treatment",
  "patient_authorized",
  "emergency",
  "operations",
  "audit",
] as const;
export type Purpose = (typeof PURPOSES)[number];

/** Purposes 45 CFR 164.528 leaves out of an accounting (treatment, payment, operations). */
const TPO: readonly Purpose[] = ["treatment", "operations"];

export interface DisclosureQuery {
  patientId: string;
  from: Date;
  to: Date;
  excludeTreatment: boolean;
}

export interface DisclosureGroup {
  actor: { id: string | null; name: string | null; erased: boolean };
  role: string | null;
  /** When the grant is a clinic's: the clinic it was made to. */
  clinic?: { id: string; name: string | null };
  purpose: Purpose;
  grantId: string | null;
  first: string;
  last: string;
  count: number;
  what: string[];
}

export interface DisclosurePage {
  items: DisclosureGroup[];
  nextCursor: string | null;
}

const SCOPE = "audit-disclosures";
/** The keyset of a group: first use (µs since the epoch), actor, role, purpose, grant. */
const Position = z.tuple([
  z.string().regex(/^-?\d{1,20}$/),
  z.string().max(200),
  z.string().max(50),
  z.enum(PURPOSES),
  z.string().max(200),
]);

/**
 * The events that name the patient: those of the audit trail's patient
 * filter, and audit queries whose filters hold the patient's id (the type
 * a literal, as the partial index of migration 7 needs). Events are `e`.
 */
export const namesPatient = (patientId: string): Query =>
  sql`(${touchesPatient(patientId)}
    or (e.type = 'AuditQueried' and e.data->'filters'->>'patientId' = ${patientId})
    or (e.type = 'AuditExported' and e.data->'filters'->>'patientId' = ${patientId}))`;

/** The events that disclosed something of the patient, with their purpose. */
const disclosed = (q: DisclosureQuery): Query => {
  const p = q.patientId;
  const keys = Object.keys(DISCLOSURES);
  const types = [...new Set(keys.map((k) => k.split(":")[0]!))];
  return sql`select e.recorded_at,
      case when e.type = 'AuditQueried' then 'AuditQueried:' || coalesce(e.data->>'query', '')
        else e.type end as what,
      coalesce(e.metadata->>'actorId', '') as actor_id,
      coalesce(e.metadata->>'actorRole', u.role, '') as role,
      coalesce(e.metadata->>'grantId', '') as grant_id,
      case
        when e.type = 'BreakGlassUsed' or e.metadata->>'grantId' in (
            select b.data->>'grantId' from events b
            where b.type = 'BreakGlassUsed' and b.data->>'patientId' = ${p})
          then 'emergency'
        when e.metadata->>'grantId' is not null or e.metadata->>'onBehalfOf' = ${p}
          then 'patient_authorized'
        when coalesce(e.metadata->>'actorRole', u.role) = 'auditor'
          or e.type = any(${AUDIT_SURFACE}::text[]) then 'audit'
        when coalesce(e.metadata->>'actorRole', u.role) = 'practitioner' then 'treatment'
        -- a patient-role account other than the patient's own: a family proxy
        when coalesce(e.metadata->>'actorRole', u.role) = 'patient' then 'patient_authorized'
        else 'operations'
      end as purpose
    from events e
      left join users u on u.id::text = e.metadata->>'actorId'
    where ${namesPatient(p)}
      and e.type = any(${types}::text[])
      and e.recorded_at >= ${q.from} and e.recorded_at < ${q.to}
      and coalesce(e.metadata->>'actorId', '') not in (
        select s.id::text from users s where s.patient_id = ${p}::uuid)`;
};

interface GroupRow {
  first_us: string;
  actor_id: string;
  role: string;
  purpose: Purpose;
  grant_id: string;
  first: Date | string;
  last: Date | string;
  n: number | string;
  what: string[] | string;
}

/** Postgres arrays come back as arrays from postgres.js and PGlite; be lenient all the same. */
const asArray = (v: string[] | string): string[] =>
  Array.isArray(v) ? v : v.replace(/^\{|\}$/g, "").split(",").filter(Boolean)
    .map((s) => s.replace(/^"|"$/g, ""));

/**
 * A page of the patient's disclosure groups, ordered by first use (then
 * actor, role, purpose, grant), with a sealed keyset cursor. `limit` null:
 * every group (the CSV report).
 */
export const disclosures = async (
  store: EventStore,
  q: DisclosureQuery,
  page: { limit: number | null; cursor?: string },
): Promise<DisclosurePage> => {
  const after = page.cursor ? await store.codec.cursors.decode(SCOPE, Position, page.cursor) : null;
  const rows = await store.db.query<GroupRow>(sql`select * from (
      select (extract(epoch from min(d.recorded_at)) * 1000000)::bigint::text as first_us,
        d.actor_id, d.role, d.purpose, d.grant_id,
        min(d.recorded_at) as first, max(d.recorded_at) as last, count(*)::int as n,
        array_agg(distinct d.what) as what
      from (${disclosed(q)}) d
      ${q.excludeTreatment ? sql`where d.purpose <> all(${[...TPO]}::text[])` : sql``}
      group by d.actor_id, d.role, d.purpose, d.grant_id) g
    ${
    after
      ? sql`where (g.first_us::bigint, g.actor_id, g.role, g.purpose, g.grant_id) >
          (${after[0]}::bigint, ${after[1]}::text, ${after[2]}::text, ${after[3]}::text,
            ${after[4]}::text)`
      : sql``
  }
    order by g.first_us::bigint, g.actor_id, g.role, g.purpose, g.grant_id
    ${page.limit === null ? sql`` : sql`limit ${int(page.limit + 1)}`}`);
  const slice = page.limit === null ? rows : rows.slice(0, page.limit);
  const actors = await actorNames(store, slice.map((r) => r.actor_id));
  const clinics = await clinicGrants(store, q.patientId);
  const items = slice.map((r): DisclosureGroup => {
    const a = actors.get(r.actor_id);
    const clinic = r.grant_id ? clinics.get(r.grant_id) : undefined;
    return {
      actor: { id: r.actor_id || null, name: a?.name ?? null, erased: a?.erased ?? false },
      role: r.role || null,
      ...(clinic ? { clinic } : {}),
      purpose: r.purpose,
      grantId: r.grant_id || null,
      first: timestamp(r.first),
      last: timestamp(r.last),
      count: Number(r.n),
      what: [...new Set(asArray(r.what).map((w) => DISCLOSURES[w] ?? w))].sort(),
    };
  });
  const last = slice.at(-1);
  return {
    items,
    nextCursor: page.limit !== null && rows.length > page.limit && last
      ? await store.codec.cursors.encode(SCOPE, [
        last.first_us,
        last.actor_id,
        last.role,
        last.purpose,
        last.grant_id,
      ])
      : null,
  };
};

const isUuid = (x: string) => z.uuid().safeParse(x).success;

/**
 * Names from the users read model. An erased user's row is a tombstone
 * with no name: it reads as erased, never as a failure.
 */
export const actorNames = async (
  store: EventStore,
  ids: readonly string[],
): Promise<Map<string, { name: string | null; role: string; erased: boolean }>> => {
  const uuids = [...new Set(ids)].filter(isUuid);
  if (uuids.length === 0) return new Map();
  const rows = await store.db.query<
    { id: string; name: string | null; role: string; erased: boolean }
  >(
    sql`select id::text as id, name, role, erased_at is not null as erased from users
      where id = any(${uuids}::uuid[])`,
  );
  return new Map(rows.map((r) => [r.id, { name: r.name, role: r.role, erased: r.erased }]));
};

/** The patient's grants made to a clinic (from the log), with the clinic's name. */
const clinicGrants = async (
  store: EventStore,
  patientId: string,
): Promise<Map<string, { id: string; name: string | null }>> => {
  const rows = await store.db.query<{ grant_id: string; clinic_id: string; name: string | null }>(
    sql`select e.data->>'grantId' as grant_id, e.data->>'granteeId' as clinic_id, c.name
      from events e left join clinics c on c.id::text = e.data->>'granteeId'
      where e.type = 'AccessGranted' and e.data->>'patientId' = ${patientId}
        and e.data->>'granteeKind' = 'clinic'`,
  );
  return new Map(rows.map((r) => [r.grant_id, { id: r.clinic_id, name: r.name }]));
};

/** Whether the patient was ever registered (erased ones too: their facts stay in the log). */
export const patientInLog = async (store: EventStore, patientId: string): Promise<boolean> => {
  const [r] = await store.db.query<{ n: number }>(
    sql`select count(*)::int as n from (select 1 from events
      where stream_id = ${`patient-${patientId}`} limit 1) s`,
  );
  return Number(r?.n ?? 0) > 0;
};

/** The default window's start: six years before `now` (HIPAA's retention and accounting span). */
export const sixYearsBefore = (now: Date): Date => {
  const d = new Date(now.getTime());
  d.setUTCFullYear(d.getUTCFullYear() - 6);
  return d;
};

const CSV_COLUMNS = [
  "actorId",
  "actorName",
  "role",
  "clinicId",
  "clinicName",
  "purpose",
  "grantId",
  "first",
  "last",
  "count",
  "what",
] as const;

/**
 * One CSV field (RFC 4180): quoted when it holds a comma, quote or line
 * break; a leading `=`, `+`, `-`, `@`, tab or CR is prefixed with `'` so a
 * spreadsheet does not run a name as a formula.
 */
const csvField = (v: string | number | null | undefined): string => {
  let s = v === null || v === undefined ? "" : String(v);
  if (/^[=+\-@\t\r]/.test(s)) s = `'${s}`;
  return /[",\r\n]/.test(s) ? `"${s.replaceAll('"', '""')}"` : s;
};

/** The groups as CSV: a header row, then one row per group (`what` joined with "; "). */
export const disclosuresCsv = (items: readonly DisclosureGroup[]): string =>
  [
    CSV_COLUMNS.join(","),
    ...items.map((g) =>
      [
        g.actor.id,
        g.actor.erased ? "[erased]" : g.actor.name,
        g.role,
        g.clinic?.id,
        g.clinic?.name,
        g.purpose,
        g.grantId,
        g.first,
        g.last,
        g.count,
        g.what.join("; "),
      ].map(csvField).join(",")
    ),
  ].join("\r\n") + "\r\n";
