import { z } from "zod";
import type { NotificationChannel } from "../../events/notification.ts";
import type { Db } from "../store/db.ts";
import type { EventStore } from "../store/event_store.ts";
import { COLUMNS, decode, type EventRow } from "../store/read.ts";
import { type Query, sql } from "../store/sql.ts";
import { readTogether } from "../store/snapshot.ts";

export const NOTIFICATION_STATUSES = ["pending", "delivered", "failed"] as const;
export type NotificationStatus = (typeof NOTIFICATION_STATUSES)[number];

/** A notification in its recipient's inbox. */
export interface InboxItem {
  id: string;
  kind: "access_code";
  createdAt: string;
  requestId: string;
  patientId: string;
  practitioner: { id: string; name: string | null };
  clinic: { id: string; name: string | null } | null;
  /** The code while it is valid; null once expired (or erased). */
  code: string | null;
  expiresAt: string;
  expired: boolean;
}

/** A notification as the development outbox shows it to admins. */
export interface OutboxItem {
  id: string;
  kind: "access_code";
  channel: NotificationChannel;
  status: NotificationStatus;
  attempts: number;
  lastError: string | null;
  retryAt: string | null;
  createdAt: string;
  deliveredAt: string | null;
  userId: string;
  patientId: string;
  requestId: string;
  expiresAt: string;
  /** Only outside production, when the caller asked for codes. */
  code?: string | null;
}

export interface Page<T> {
  items: T[];
  nextCursor: string | null;
  total: number;
}

const Position = z.strictObject({ c: z.iso.datetime({ offset: true }), i: z.uuid() });
const iso = (v: Date | string | null): string | null =>
  v === null ? null : new Date(v).toISOString();

interface Row {
  id: string;
  user_id: string;
  patient_id: string;
  channel: NotificationChannel;
  status: NotificationStatus;
  attempts: number;
  last_error: string | null;
  next_attempt_at: Date | string | null;
  delivered_at: Date | string | null;
  created_at: Date | string;
  expires_at: Date | string;
  request_id: string;
  source_position: string | number;
  practitioner_id: string;
  practitioner_name: string | null;
  clinic_id: string | null;
  clinic_name: string | null;
}

/** One keyset page, newest first, of the rows `where` selects. */
const page = async (
  store: EventStore,
  scope: string,
  where: Query,
  opts: { limit: number; cursor?: string },
): Promise<{ rows: Row[]; nextCursor: string | null; total: number }> => {
  const after = opts.cursor ? await store.codec.cursors.decode(scope, Position, opts.cursor) : null;
  const [rows, [count]] = await readTogether<Row, { n: number }>(
    store.db,
    sql`select n.id::text as id, n.user_id::text as user_id,
      n.patient_id::text as patient_id, n.channel, n.status, n.attempts, n.last_error,
      n.next_attempt_at, n.delivered_at, n.created_at, n.expires_at,
      n.request_id::text as request_id, n.source_position,
      n.practitioner_id::text as practitioner_id, p.name as practitioner_name,
      n.clinic_id::text as clinic_id, c.name as clinic_name
    from notifications n
    left join users p on p.id = n.practitioner_id
    left join clinics c on c.id = n.clinic_id
    where ${where} ${
      after ? sql`and (n.created_at, n.id) < (${after.c}::timestamptz, ${after.i}::uuid)` : sql``
    }
    order by n.created_at desc, n.id desc limit ${opts.limit + 1}`,
    sql`select count(*)::int as n from notifications n where ${where}`,
  );
  const items = rows.slice(0, opts.limit);
  const last = items.at(-1);
  return {
    rows: items,
    nextCursor: rows.length > opts.limit && last
      ? await store.codec.cursors.encode(scope, { c: iso(last.created_at), i: last.id })
      : null,
    total: Number(count?.n ?? 0),
  };
};

/**
 * The codes of these notifications, unsealed from their source events (the
 * only place they are kept): by source position; null where the patient's
 * key is gone.
 */
const codesOf = async (
  store: EventStore,
  rows: readonly Row[],
  db: Db = store.db,
): Promise<Map<number, string | null>> => {
  const positions = [...new Set(rows.map((r) => Number(r.source_position)))];
  if (positions.length === 0) return new Map();
  const events = await decode(
    store,
    await db.query<EventRow>(
      sql`select ${COLUMNS} from events where global_position = any(${positions}::bigint[])`,
    ),
    true,
  );
  return new Map(events.map((e) => [
    e.globalPosition,
    typeof e.data.code === "string" ? e.data.code : null,
  ]));
};

/** The signed-in user's in-app notifications, newest first; codes shown while valid. */
export const listInbox = async (
  store: EventStore,
  userId: string,
  opts: { limit: number; cursor?: string },
  now: Date,
): Promise<Page<InboxItem>> => {
  const p = await page(
    store,
    `notifications:${userId}`,
    // still theirs to read: the patient's own account, or a full proxy not removed since
    sql`n.user_id = ${userId}::uuid and n.channel = 'in_app' and (
      exists (select 1 from users u where u.id = n.user_id and u.patient_id = n.patient_id)
      or exists (select 1 from patient_proxies x where x.user_id = n.user_id
        and x.patient_id = n.patient_id and x.level = 'full'))`,
    opts,
  );
  const live = p.rows.filter((r) => new Date(r.expires_at) > now);
  const codes = await codesOf(store, live);
  return {
    items: p.rows.map((r) => {
      const expired = new Date(r.expires_at) <= now;
      return {
        id: r.id,
        kind: "access_code",
        createdAt: iso(r.created_at)!,
        requestId: r.request_id,
        patientId: r.patient_id,
        practitioner: { id: r.practitioner_id, name: r.practitioner_name },
        clinic: r.clinic_id ? { id: r.clinic_id, name: r.clinic_name } : null,
        code: expired ? null : codes.get(Number(r.source_position)) ?? null,
        expiresAt: iso(r.expires_at)!,
        expired,
      };
    }),
    nextCursor: p.nextCursor,
    total: p.total,
  };
};

/** Every notification and its delivery state, newest first (the development outbox). */
export const listOutbox = async (
  store: EventStore,
  opts: {
    limit: number;
    cursor?: string;
    status?: NotificationStatus;
    channel?: NotificationChannel;
    withCodes: boolean;
  },
): Promise<Page<OutboxItem>> => {
  const where = sql`true ${opts.status ? sql`and n.status = ${opts.status}` : sql``} ${
    opts.channel ? sql`and n.channel = ${opts.channel}` : sql``
  }`;
  // filters are bound into the cursor's scope: a cursor of one filter is refused by another
  const scope = `outbox:${opts.status ?? ""}:${opts.channel ?? ""}`;
  const p = await page(store, scope, where, opts);
  const codes = opts.withCodes ? await codesOf(store, p.rows) : null;
  return {
    items: p.rows.map((r) => ({
      id: r.id,
      kind: "access_code",
      channel: r.channel,
      status: r.status,
      attempts: r.attempts,
      lastError: r.last_error,
      retryAt: r.status === "pending" && r.attempts > 0 ? iso(r.next_attempt_at) : null,
      createdAt: iso(r.created_at)!,
      deliveredAt: iso(r.delivered_at),
      userId: r.user_id,
      patientId: r.patient_id,
      requestId: r.request_id,
      expiresAt: iso(r.expires_at)!,
      ...(codes ? { code: codes.get(Number(r.source_position)) ?? null } : {}),
    })),
    nextCursor: p.nextCursor,
    total: p.total,
  };
};
