import { z } from "zod";
import type { BREAK_GLASS_OUTCOMES } from "../../events/access.ts";
import type { EventMetadata } from "../../events/metadata.ts";
import { breakGlassDecider } from "../domain/break_glass.ts";
import { handleCommand } from "../domain/command_handler.ts";
import { NotFoundError } from "../errors.ts";
import type { EventStore } from "../store/event_store.ts";
import { sql } from "../store/sql.ts";
import { timestamp } from "../timestamp.ts";
import { refuseErased } from "./visibility.ts";
import { readTogether } from "../store/snapshot.ts";

export const breakGlassStream = (id: string) => `break-glass-${id}`;

type Outcome = (typeof BREAK_GLASS_OUTCOMES)[number];

/**
 * Opens emergency access: BreakGlassUsed and a one-hour AccessGranted to
 * the practitioner, one append on a new stream. No relation is needed, only
 * a patient that exists (404) and was not erased (410).
 */
export const useBreakGlass = async (
  store: EventStore,
  input: { patientId: string; practitionerId: string; reason: string },
  now: Date,
  metadata: EventMetadata,
): Promise<{ id: string; grantId: string; expiresAt: string }> => {
  await refuseErased(store, input.patientId);
  const [p] = await store.db.query<{ deleted: boolean }>(
    sql`select deleted from patients where id = ${input.patientId}::uuid`,
  );
  // a soft-deleted record answers as unknown to practitioners (see visibility.ts)
  if (!p || p.deleted) {
    throw new NotFoundError("no such patient");
  }
  const id = crypto.randomUUID();
  const grantId = crypto.randomUUID();
  const r = await handleCommand(store, breakGlassDecider, breakGlassStream(id), {
    type: "UseBreakGlass",
    breakGlassId: id,
    grantId,
    ...input,
    now,
  }, { metadata: { ...metadata, grantId } });
  const used = r.events[0]!;
  return { id, grantId, expiresAt: (used.data as { expiresAt: string }).expiresAt };
};

/** Closes a use with its outcome and note, once: a second review is a 409. */
export const reviewBreakGlass = async (
  store: EventStore,
  id: string,
  review: { outcome: Outcome; note: string },
  metadata: EventMetadata,
): Promise<void> => {
  await handleCommand(store, breakGlassDecider, breakGlassStream(id), {
    type: "ReviewBreakGlass",
    breakGlassId: id,
    ...review,
  }, { metadata, unseal: false, retry: true });
};

export interface BreakGlassView {
  id: string;
  patientId: string;
  practitioner: { id: string; name: string | null };
  grantId: string;
  usedAt: string;
  expiresAt: string;
  /** Opened from the log: null once the patient's key is destroyed. */
  reason: string | null;
  review: {
    outcome: Outcome;
    note: string | null;
    reviewedAt: string;
    reviewedBy: string | null;
  } | null;
}

const Position = z.tuple([z.iso.datetime(), z.uuid()]);

/** A page of break-glass uses, newest first; `reviewed` filters by review state. */
export const listBreakGlass = async (
  store: EventStore,
  q: { reviewed?: boolean; limit: number; cursor?: string },
): Promise<{ items: BreakGlassView[]; nextCursor: string | null; total: number }> => {
  const after = q.cursor
    ? await store.codec.cursors.decode("break-glass", Position, q.cursor)
    : null;
  const where = q.reviewed === undefined
    ? sql`where true`
    : q.reviewed
    ? sql`where b.reviewed_at is not null`
    : sql`where b.reviewed_at is null`;
  const [rows, [count]] = await readTogether<{
    id: string;
    patient_id: string;
    practitioner_id: string;
    practitioner_name: string | null;
    grant_id: string;
    used_at: Date | string;
    expires_at: Date | string;
    reviewed_at: Date | string | null;
    reviewed_by: string | null;
    outcome: Outcome | null;
    cursor_at: string;
  }, { n: number }>(
    store.db,
    sql`select b.id::text as id, b.patient_id::text as patient_id,
      b.practitioner_id::text as practitioner_id, u.name as practitioner_name,
      b.grant_id::text as grant_id, b.used_at, b.expires_at, b.reviewed_at,
      b.reviewed_by::text as reviewed_by, b.outcome,
      to_char(b.used_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') as cursor_at
    from break_glass b left join users u on u.id = b.practitioner_id
    ${where}
      ${
      after
        ? sql`and (b.used_at, b.id) < (${after[0]}::text::timestamptz, ${after[1]}::uuid)`
        : sql``
    }
    order by b.used_at desc, b.id desc
    limit ${q.limit + 1}`,
    sql`select count(*)::int as n from break_glass b ${where}`,
  );
  const page = rows.slice(0, q.limit);
  const last = page.at(-1);
  const items = await Promise.all(page.map(async (r) => {
    const events = await store.readStream(breakGlassStream(r.id));
    const text = (type: string, field: string) => {
      const v = (events.find((e) => e.type === type)?.data as Record<string, unknown> | undefined)
        ?.[field];
      return typeof v === "string" ? v : null;
    };
    return {
      id: r.id,
      patientId: r.patient_id,
      practitioner: { id: r.practitioner_id, name: r.practitioner_name },
      grantId: r.grant_id,
      usedAt: timestamp(r.used_at),
      expiresAt: timestamp(r.expires_at),
      reason: text("BreakGlassUsed", "reason"),
      review: r.reviewed_at === null || r.outcome === null ? null : {
        outcome: r.outcome,
        note: text("BreakGlassReviewed", "note"),
        reviewedAt: timestamp(r.reviewed_at),
        reviewedBy: r.reviewed_by,
      },
    };
  }));
  return {
    items,
    nextCursor: rows.length > q.limit && last
      ? await store.codec.cursors.encode("break-glass", [last.cursor_at, last.id])
      : null,
    total: Number(count?.n ?? 0),
  };
};
