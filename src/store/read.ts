import type { EventMetadata } from "../../events/metadata.ts";
import type { Catalog } from "./catalog.ts";
import type { Db } from "./db.ts";
import type { PhiCodec } from "./phi_codec.ts";
import { type Query, sql } from "./sql.ts";
import type { FoldedEvent, StoredEvent } from "./types.ts";

/** What reading the log needs: the database, the catalogue to upcast, the codec to unseal. */
export interface LogReader {
  readonly db: Db;
  readonly catalog: Catalog;
  readonly codec: PhiCodec;
}

export interface ReadAllOptions {
  /** Open PHI fields (default true). */
  unseal?: boolean;
  /** Read through this connection or transaction instead of the pool. */
  db?: Db;
  /**
   * Stay below the oldest in-flight transaction (default true). Only a caller
   * that holds the append lock, so that no append can be in flight, may turn
   * it off and read plainly by position.
   */
  horizon?: boolean;
}

export interface EventRow {
  global_position: string | number;
  stream_id: string;
  stream_version: number;
  event_id: string;
  type: string;
  schema_version: number;
  data: Record<string, unknown>;
  metadata: EventMetadata;
  recorded_at: Date | string;
  transaction_id: string;
  prev_hash: string | null;
  hash: string;
}

export const COLUMNS = sql`global_position, stream_id, stream_version, event_id::text as event_id,
  type, schema_version, data, metadata, recorded_at, transaction_id::text as transaction_id,
  prev_hash, hash`;

/**
 * The columns of a {@link FoldedEvent}: what `decodeFolded` reads. The time
 * comes as epoch milliseconds (a Date keeps no more): parsing PostgreSQL's
 * timestamp text was a visible share of a rebuild.
 */
export const FOLDED_COLUMNS = sql`global_position, stream_id, stream_version, type,
  schema_version, data, (extract(epoch from recorded_at) * 1000)::float8 as recorded_ms`;

/** {@link FOLDED_COLUMNS} of a subquery `p`, as a query over it returns them. */
export const FOLDED_OUTPUT = sql`p.global_position, p.stream_id, p.stream_version, p.type,
  p.schema_version, p.data, p.recorded_ms`;

/** A row of {@link FOLDED_COLUMNS}. */
export type FoldedRow =
  & Pick<
    EventRow,
    "global_position" | "stream_id" | "stream_version" | "type" | "schema_version" | "data"
  >
  & { recorded_ms: number };

/** The stream's current version (0 when it has no events). */
export const streamVersion = async (db: Db, streamId: string): Promise<number> => {
  const [r] = await db.query<{ v: number | null }>(
    sql`select max(stream_version) as v from events where stream_id = ${streamId}`,
  );
  return Number(r?.v ?? 0);
};

/** The highest global position written (committed or not yet visible). */
export const headPosition = async (db: Db): Promise<number> => {
  const [r] = await db.query<{ p: string | number | null }>(
    sql`select max(global_position) as p from events`,
  );
  return Number(r?.p ?? 0);
};

/**
 * A stream's events in version order; with `asOf`, only those recorded at
 * or before that instant (the stream as it stood then).
 */
export const readStream = async (
  log: LogReader,
  streamId: string,
  opts: { asOf?: Date; unseal?: boolean } = {},
): Promise<StoredEvent[]> => {
  const rows = await log.db.query<EventRow>(sql`select ${COLUMNS} from events
    where stream_id = ${streamId}
    ${opts.asOf ? sql`and recorded_at <= ${opts.asOf}::timestamptz` : sql``}
    order by stream_version`);
  return await decode(log, rows, opts.unseal ?? true);
};

/**
 * Several streams' events in one query. `streams` selects rows of
 * (`stream_id`, `ord`); the result holds each stream that has events, in
 * `ord` order, with its events in version order.
 */
export const readStreams = async (
  log: LogReader,
  streams: Query,
  opts: { unseal?: boolean } = {},
): Promise<Map<string, StoredEvent[]>> => {
  const rows = await log.db.query<EventRow>(sql`select ${COLUMNS}
    from (${streams}) as s join events using (stream_id)
    order by s.ord, events.stream_version`);
  const out = new Map<string, StoredEvent[]>();
  for (const e of await decode(log, rows, opts.unseal ?? true)) {
    const list = out.get(e.streamId);
    if (list) list.push(e);
    else out.set(e.streamId, [e]);
  }
  return out;
};

/**
 * Up to `limit` events after `afterPosition`, for followers of the whole
 * log. Only events of transactions older than the oldest one still in
 * flight are returned, ordered by (transaction id, position): an event
 * committed late by a slow concurrent transaction is therefore never
 * skipped. Store appends hold an advisory lock, so for them this order is
 * global-position order.
 */
export const readAll = async (
  log: LogReader,
  afterPosition: number,
  limit: number,
  opts: ReadAllOptions = {},
): Promise<StoredEvent[]> => {
  const db = opts.db ?? log.db;
  const rows = opts.horizon === false
    ? await db.query<EventRow>(sql`select ${COLUMNS} from events
        where global_position > ${afterPosition} order by global_position limit ${limit}`)
    : await db.query<EventRow>(sql`select ${COLUMNS} from events
        where (transaction_id, global_position) > (
            -- the transaction of the checkpoint's event (or of the last one before it)
            coalesce((select transaction_id from events where global_position <= ${afterPosition}
              order by global_position desc limit 1), '0'::xid8), ${afterPosition})
          and transaction_id < pg_snapshot_xmin(pg_current_snapshot())
        -- qualified: a bare name would bind to the ::text output column and sort as text
        order by events.transaction_id, events.global_position
        limit ${limit}`);
  return await decode(log, rows, opts.unseal ?? true, db);
};

/**
 * Payloads opened at once by {@link decode}. Opening is synchronous (node:crypto,
 * see PhiCodec); what overlaps is a key lookup a payload may still need.
 */
const UNSEAL_CONCURRENCY = 256;

/**
 * The rows' payloads, unsealed when asked (else as stored, nothing erased).
 * Unsealing goes first: ciphertexts are bound to the field names they were
 * stored under. Key lookups go through the reader's connection (on PGlite, a
 * rebuild's open transaction holds the only session); a page's keys are
 * loaded in one query, and the payloads whose keys are then cached opened
 * without a promise each; the others concurrently.
 */
const open = async (
  log: LogReader,
  rows: readonly { data: Record<string, unknown> }[],
  unseal: boolean,
  db?: Db,
): Promise<{ data: Record<string, unknown>; erasedFields: string[] }[]> => {
  if (!unseal || rows.length === 0) return rows.map((r) => ({ data: r.data, erasedFields: [] }));
  if (rows.length > 1) await log.codec.preload(rows.map((r) => r.data), db);
  const opened = rows.map((r) => log.codec.unsealPayloadCached(r.data));
  const waiting = [...opened.keys()].filter((i) => opened[i] === undefined);
  for (let i = 0; i < waiting.length; i += UNSEAL_CONCURRENCY) {
    await Promise.all(
      waiting.slice(i, i + UNSEAL_CONCURRENCY).map(async (k) => {
        opened[k] = await log.codec.unsealPayload(rows[k]!.data, db);
      }),
    );
  }
  return opened as { data: Record<string, unknown>; erasedFields: string[] }[];
};

/** Rows of `events` as stored events: PHI unsealed (when asked) and upcast. */
export const decode = async (
  log: LogReader,
  rows: readonly EventRow[],
  unseal: boolean,
  db?: Db,
): Promise<StoredEvent[]> => {
  const opened = await open(log, rows, unseal, db);
  return rows.map((r, i) => {
    const up = log.catalog.upcast(r.type, Number(r.schema_version), opened[i]!.data);
    return {
      globalPosition: Number(r.global_position),
      streamId: r.stream_id,
      streamVersion: Number(r.stream_version),
      eventId: r.event_id,
      type: r.type,
      schemaVersion: up.version,
      data: up.data,
      metadata: r.metadata,
      recordedAt: new Date(r.recorded_at),
      transactionId: r.transaction_id,
      prevHash: r.prev_hash,
      hash: r.hash,
      erasedFields: opened[i]!.erasedFields,
    };
  });
};

/** Rows of {@link FOLDED_COLUMNS} as the events a `foldBatch` takes, decoded as {@link decode} does. */
export const decodeFolded = async (
  log: LogReader,
  rows: readonly FoldedRow[],
  unseal: boolean,
  db?: Db,
): Promise<FoldedEvent[]> => {
  const opened = await open(log, rows, unseal, db);
  return rows.map((r, i) => {
    const up = log.catalog.upcast(r.type, Number(r.schema_version), opened[i]!.data);
    return {
      globalPosition: Number(r.global_position),
      streamId: r.stream_id,
      streamVersion: Number(r.stream_version),
      type: r.type,
      schemaVersion: up.version,
      data: up.data,
      recordedAt: new Date(r.recorded_ms),
      erasedFields: opened[i]!.erasedFields,
    };
  });
};
