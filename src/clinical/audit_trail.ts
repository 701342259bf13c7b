import { z } from "zod";
import type { EventMetadata } from "../../events/metadata.ts";
import type { EventStore } from "../store/event_store.ts";
import { int, type Query, sql } from "../store/sql.ts";
import { timestamp } from "../timestamp.ts";
import { readTogether } from "../store/snapshot.ts";

/** What an auditor may filter the log by: ids, event types and a time window. */
export interface AuditQuery {
  patientId?: string;
  actorId?: string;
  types?: string[];
  from?: Date;
  to?: Date;
  streamId?: string;
  grantId?: string;
  /** Recorded at or before (a stream's past, inclusive as `readStream`'s `asOf`). */
  asOf?: Date;
}

/** One event as the audit surface shows it: who, what, when, from where, through what. */
export interface AuditItem {
  position: number;
  time: string;
  type: string;
  streamId: string;
  actor: { id: string; role: string | null; name: string | null } | null;
  /** The payload's id fields (`patientId`, `grantIds`, …): never its PHI fields. */
  subjects: Record<string, string | string[]>;
  ip: string | null;
  userAgent: string | null;
  requestId: string | null;
  grantId: string | null;
  onBehalfOf: string | null;
  reason: string | null;
  outcome: "ok" | "denied";
}

export interface AuditPage {
  items: AuditItem[];
  nextCursor: string | null;
  total: number;
}

const Position = z.tuple([z.number().int().min(0)]);

/** How a patient's events are found: see migrations 5 and 12 for the indexes. */
export const touchesPatient = (patientId: string): Query =>
  sql`(e.data->>'patientId' = ${patientId}
    or e.stream_id = ${`patient-${patientId}`}
    or e.data->'patientIds' @> jsonb_build_array(${patientId}::text)
    or (e.type = 'AccessDenied' and e.data->>'resourceId' = ${patientId}))`;

const and = (parts: Query[]): Query => parts.reduce((acc, p) => sql`${acc} and ${p}`, sql`true`);

const where = (q: AuditQuery): Query => {
  const parts: Query[] = [];
  if (q.patientId) parts.push(touchesPatient(q.patientId));
  if (q.actorId) parts.push(sql`e.metadata->>'actorId' = ${q.actorId}`);
  if (q.types?.length) parts.push(sql`e.type = any(${[...new Set(q.types)]}::text[])`);
  if (q.from) parts.push(sql`e.recorded_at >= ${q.from}`);
  if (q.to) parts.push(sql`e.recorded_at < ${q.to}`);
  if (q.streamId) parts.push(sql`e.stream_id = ${q.streamId}`);
  if (q.grantId) parts.push(sql`e.metadata->>'grantId' = ${q.grantId}`);
  if (q.asOf) parts.push(sql`e.recorded_at <= ${q.asOf}`);
  return and(parts);
};

/** The filters as a condition over `events e` (the export pages the log with it). */
export const auditWhere = where;

const ID_KEY = /^[a-z][A-Za-z]*Ids?$/;
const MAX_ID_CHARS = 200;

/**
 * The id fields of a payload as stored: keys named `…Id`/`…Ids` holding
 * strings, minus the event type's PHI fields (sealed, and PHI even when
 * named like an id). Everything else in a payload may be PHI, so nothing
 * else is shown.
 */
export const subjectIds = (
  store: EventStore,
  type: string,
  data: Record<string, unknown>,
): Record<string, string | string[]> => {
  const phi = new Set<string>(
    store.catalog.has(type) ? store.catalog.get(type).phi?.fields ?? [] : [],
  );
  const out: Record<string, string | string[]> = {};
  for (const [k, v] of Object.entries(data ?? {})) {
    if (!ID_KEY.test(k) || phi.has(k)) continue;
    if (typeof v === "string" && v.length <= MAX_ID_CHARS) out[k] = v;
    else if (
      Array.isArray(v) && v.every((x) => typeof x === "string" && x.length <= MAX_ID_CHARS)
    ) out[k] = v as string[];
  }
  return out;
};

interface Row {
  position: string | number;
  recorded_at: Date | string;
  type: string;
  stream_id: string;
  data: Record<string, unknown>;
  metadata: EventMetadata;
}

/**
 * A page of the log's events matching every filter given, oldest first,
 * by global position (a keyset cursor sealed to `scope`). Appends take an
 * advisory lock until they commit, so positions follow commit order and a
 * position cursor never steps over an event committed later.
 */
export const queryAuditEvents = async (
  store: EventStore,
  scope: "audit-events" | "audit-activity" | "audit-stream",
  q: AuditQuery,
  page: { limit: number; cursor?: string },
): Promise<AuditPage> => {
  const after = page.cursor ? await store.codec.cursors.decode(scope, Position, page.cursor) : null;
  const filter = where(q);
  const [rows, [count]] = await readTogether<Row, { n: number }>(
    store.db,
    sql`select e.global_position::text as position, e.recorded_at, e.type, e.stream_id,
        e.data, e.metadata
      from events e
      where ${filter} ${after ? sql`and e.global_position > ${after[0]}::bigint` : sql``}
      order by e.global_position
      limit ${int(page.limit + 1)}`,
    sql`select count(*)::int as n from events e where ${filter}`,
  );
  const slice = rows.slice(0, page.limit);
  const actors = await actorsById(store, slice.map((r) => r.metadata?.actorId));
  const items = slice.map((r) => toItem(store, r, actors));
  const last = slice.at(-1);
  return {
    items,
    nextCursor: rows.length > page.limit && last
      ? await store.codec.cursors.encode(scope, [Number(last.position)])
      : null,
    total: Number(count?.n ?? 0),
  };
};

const isUuid = (x: string) => z.uuid().safeParse(x).success;

/** Names and roles of the actors that are users (staff names are not patient PHI). */
const actorsById = async (
  store: EventStore,
  ids: readonly (string | undefined)[],
): Promise<Map<string, { name: string | null; role: string }>> => {
  const uuids = [...new Set(ids)].filter((x): x is string => !!x && isUuid(x));
  if (uuids.length === 0) return new Map();
  const rows = await store.db.query<{ id: string; name: string | null; role: string }>(
    sql`select id::text as id, name, role from users where id = any(${uuids}::uuid[])`,
  );
  return new Map(rows.map((r) => [r.id, { name: r.name, role: r.role }]));
};

const toItem = (
  store: EventStore,
  r: Row,
  actors: Map<string, { name: string | null; role: string }>,
): AuditItem => {
  const m = r.metadata ?? {};
  const user = m.actorId ? actors.get(m.actorId) : undefined;
  return {
    position: Number(r.position),
    time: timestamp(r.recorded_at),
    type: r.type,
    streamId: r.stream_id,
    actor: m.actorId
      ? { id: m.actorId, role: m.actorRole ?? user?.role ?? null, name: user?.name ?? null }
      : null,
    subjects: subjectIds(store, r.type, r.data),
    ip: m.ip ?? null,
    userAgent: m.userAgent ?? null,
    requestId: m.requestId ?? null,
    grantId: m.grantId ?? null,
    onBehalfOf: m.onBehalfOf ?? null,
    reason: m.reason ?? null,
    outcome: r.type === "AccessDenied" ? "denied" : "ok",
  };
};

/** Whether a user with this id was ever registered (the activity route's 404). */
export const userExists = async (store: EventStore, id: string): Promise<boolean> => {
  const [r] = await store.db.query<{ n: number }>(
    sql`select count(*)::int as n from users where id = ${id}::uuid`,
  );
  return Number(r?.n ?? 0) > 0;
};

/** Whether the stream has any event at all (the stream route's 404). */
export const streamExists = async (store: EventStore, streamId: string): Promise<boolean> => {
  const [r] = await store.db.query<{ n: number }>(
    sql`select count(*)::int as n from (select 1 from events where stream_id = ${streamId}
      limit 1) s`,
  );
  return Number(r?.n ?? 0) > 0;
};
