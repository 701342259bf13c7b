import { z } from "zod";
import type { EventMetadata } from "../../events/metadata.ts";
import type { GRANT_SOURCES, GRANTEE_KINDS } from "../../events/access.ts";
import { type Actor, type RelationRule, usableGrants } from "../auth/policy.ts";
import { handleCommand } from "../domain/command_handler.ts";
import { grantDecider } from "../domain/grant.ts";
import { NotFoundError } from "../errors.ts";
import type { EventStore } from "../store/event_store.ts";
import { type Query, sql } from "../store/sql.ts";
import { timestamp } from "../timestamp.ts";
import { readTogether } from "../store/snapshot.ts";

export const GRANT_STATUSES = ["active", "expired", "revoked"] as const;
export type GrantStatus = (typeof GRANT_STATUSES)[number];

/** A grant as the API shows it; `purpose` is opened from the log (null once erased). */
export interface GrantView {
  id: string;
  patientId: string;
  patient?: { firstName: string | null; lastName: string | null };
  grantee: { kind: (typeof GRANTEE_KINDS)[number]; id: string; name: string | null };
  source: (typeof GRANT_SOURCES)[number];
  sourceId: string;
  purpose: string | null;
  grantedAt: string;
  grantedBy: string | null;
  expiresAt: string;
  status: GrantStatus;
  endedAt: string | null;
}

interface GrantRow {
  id: string;
  patient_id: string;
  grantee_kind: GrantView["grantee"]["kind"];
  grantee_id: string;
  grantee_name: string | null;
  source: GrantView["source"];
  source_id: string;
  stream_id: string;
  granted_by: string | null;
  granted_at: Date | string;
  expires_at: Date | string;
  status: string;
  ended_at: Date | string | null;
  first_name: string | null;
  last_name: string | null;
  cursor_at: string;
}

/** The status as of `now`: an active row past its expiry is expired before the sweeper runs. */
const statusAt = (now: Date) =>
  sql`case when g.status = 'active' and g.expires_at <= ${now}::timestamptz then 'expired'
    else g.status end`;

const Position = z.tuple([z.iso.datetime(), z.uuid()]);

export interface GrantQuery {
  limit: number;
  cursor?: string;
  status?: GrantStatus;
}

/**
 * A page of grants (newest first) matching `where` (a condition on `g`,
 * the access_grants row), each with its purpose opened from its stream.
 */
const listGrants = async (
  store: EventStore,
  scope: string,
  where: Query,
  q: GrantQuery,
  now: Date,
  withPatient: boolean,
): Promise<{ items: GrantView[]; nextCursor: string | null; total: number }> => {
  const after = q.cursor ? await store.codec.cursors.decode(scope, Position, q.cursor) : null;
  const filter = sql`where ${where}
    ${q.status ? sql`and ${statusAt(now)} = ${q.status}` : sql``}`;
  const [rows, [count]] = await readTogether<GrantRow, { n: number }>(
    store.db,
    sql`select g.id::text as id,
      g.patient_id::text as patient_id, g.grantee_kind, g.grantee_id::text as grantee_id,
      coalesce(u.name, c.name) as grantee_name, g.source, g.source_id::text as source_id,
      g.stream_id, g.granted_by::text as granted_by, g.granted_at, g.expires_at,
      ${statusAt(now)} as status,
      case when g.status = 'active' and g.expires_at <= ${now}::timestamptz then g.expires_at
        else g.ended_at end as ended_at,
      ${withPatient ? sql`p.first_name, p.last_name` : sql`null as first_name, null as last_name`},
      to_char(g.granted_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') as cursor_at
    from access_grants g
      left join users u on g.grantee_kind = 'practitioner' and u.id = g.grantee_id
      left join clinics c on g.grantee_kind = 'clinic' and c.id = g.grantee_id
      ${withPatient ? sql`left join patients p on p.id = g.patient_id` : sql``}
    ${filter}
      ${
      after
        ? sql`and (g.granted_at, g.id) < (${after[0]}::text::timestamptz, ${after[1]}::uuid)`
        : sql``
    }
    order by g.granted_at desc, g.id desc
    limit ${q.limit + 1}`,
    sql`select count(*)::int as n from access_grants g ${filter}`,
  );
  const page = rows.slice(0, q.limit);
  const last = page.at(-1);
  const items = await Promise.all(page.map(async (r) => ({
    id: r.id,
    patientId: r.patient_id,
    ...(withPatient ? { patient: { firstName: r.first_name, lastName: r.last_name } } : {}),
    grantee: { kind: r.grantee_kind, id: r.grantee_id, name: r.grantee_name },
    source: r.source,
    sourceId: r.source_id,
    purpose: await grantPurpose(store, r.stream_id, r.id),
    grantedAt: timestamp(r.granted_at),
    grantedBy: r.granted_by,
    expiresAt: timestamp(r.expires_at),
    status: r.status as GrantStatus,
    endedAt: r.ended_at === null ? null : timestamp(r.ended_at),
  })));
  return {
    items,
    nextCursor: rows.length > q.limit && last
      ? await store.codec.cursors.encode(scope, [last.cursor_at, last.id])
      : null,
    total: Number(count?.n ?? 0),
  };
};

/** The purpose sealed in the grant's AccessGranted (null when shredded). */
const grantPurpose = async (
  store: EventStore,
  streamId: string,
  grantId: string,
): Promise<string | null> => {
  const events = await store.readStream(streamId);
  const granted = events.find((e) =>
    e.type === "AccessGranted" && (e.data as { grantId?: string }).grantId === grantId
  );
  const purpose = (granted?.data as { purpose?: unknown } | undefined)?.purpose;
  return typeof purpose === "string" ? purpose : null;
};

/** Every grant of one patient's record, whatever its status. */
export const patientGrants = (
  store: EventStore,
  patientId: string,
  q: GrantQuery,
  now: Date,
) => listGrants(store, "grants:patient", sql`g.patient_id = ${patientId}::uuid`, q, now, false);

/**
 * The grants a practitioner can use now: to them, or to a clinic where they
 * are an active member of an active clinic (the policy's `active_grant`).
 */
export const usableGrantsOf = (
  store: EventStore,
  actor: Actor,
  q: Omit<GrantQuery, "status">,
  rule: Pick<RelationRule, "now">,
) =>
  listGrants(
    store,
    "grants:mine",
    sql`g.id in (select g.id ${usableGrants(actor, rule)})`,
    q,
    rule.now,
    true,
  );

/** The patient a grant is to (undefined for an unknown grant). */
export const grantPatient = async (
  store: EventStore,
  grantId: string,
): Promise<string | undefined> => {
  const [g] = await store.db.query<{ patient_id: string }>(
    sql`select patient_id::text as patient_id from access_grants where id = ${grantId}::uuid`,
  );
  return g?.patient_id;
};

/**
 * Revokes a grant at once (the projection is inline: the grantee's next
 * request is refused). Decided on the grant's origin stream: of concurrent
 * revocations one appends, the others re-read and get a 409.
 */
export const revokeGrant = async (
  store: EventStore,
  grantId: string,
  now: Date,
  metadata: EventMetadata,
): Promise<void> => {
  const [g] = await store.db.query<{ stream_id: string }>(
    sql`select stream_id from access_grants where id = ${grantId}::uuid`,
  );
  if (!g) throw new NotFoundError("no such grant");
  await handleCommand(store, grantDecider(grantId), g.stream_id, {
    type: "RevokeGrant",
    grantId,
    now,
  }, { metadata, unseal: false, retry: true });
};
