import {
  COLUMNS,
  decode,
  decodeFolded,
  type EventRow,
  FOLDED_COLUMNS,
  FOLDED_OUTPUT,
  type FoldedRow,
  type LogReader,
  type ReadAllOptions,
} from "./read.ts";
import { type Query, sql } from "./sql.ts";
import type { FoldedEvent, StoredEvent } from "./types.ts";

export type FollowOptions = ReadAllOptions & { types?: readonly string[] };

type FollowRow<R> = Partial<R> & { frontier: string | number | null };

/**
 * Like `readAll` (read.ts), for a projection: only events of `types` (all when
 * omitted) are read and decoded, and `position` is the checkpoint to store
 * once they are folded. It moves past events of other types too: to the
 * last event returned when the page is full, else to the last event of any
 * type below the horizon (`horizon: false`: the head of the log), so that
 * skipped events are never scanned again. Both come from one statement,
 * hence one snapshot and one horizon.
 */
export const follow = async (
  log: LogReader,
  afterPosition: number,
  limit: number,
  opts: FollowOptions = {},
): Promise<{ events: StoredEvent[]; position: number }> => {
  const db = opts.db ?? log.db;
  const { rows, position } = await page<EventRow>(
    log,
    afterPosition,
    limit,
    opts,
    COLUMNS,
    sql`p.*`,
  );
  return { events: await decode(log, rows, opts.unseal ?? true, db), position };
};

/**
 * {@link follow}, reading only what a `foldBatch` is given of an event
 * (types.ts, `FoldedEvent`).
 */
export const followFolded = async (
  log: LogReader,
  afterPosition: number,
  limit: number,
  opts: FollowOptions = {},
): Promise<{ events: FoldedEvent[]; position: number }> => {
  const db = opts.db ?? log.db;
  const { rows, position } = await page<FoldedRow>(
    log,
    afterPosition,
    limit,
    opts,
    FOLDED_COLUMNS,
    FOLDED_OUTPUT,
  );
  return { events: await decodeFolded(log, rows, opts.unseal ?? true, db), position };
};

/**
 * A page's rows (of `columns`, returned as `output` names them over the
 * subquery `p`: the sort key `tx_order` need not come back) and the
 * checkpoint after it: see {@link follow}.
 */
const page = async <R extends { global_position: string | number }>(
  log: LogReader,
  afterPosition: number,
  limit: number,
  opts: FollowOptions,
  columns: Query,
  output: Query,
): Promise<{ rows: R[]; position: number }> => {
  const db = opts.db ?? log.db;
  const only = opts.types ? sql`and events.type = any(${opts.types}::text[])` : sql``;
  // left join: the frontier row comes back even when no event matched
  const rows = opts.horizon === false
    ? await db.query<FollowRow<R>>(sql`
        select f.frontier, ${output}
        from (select max(global_position) as frontier from events) as f
        left join (select ${columns} from events
          where global_position > ${afterPosition} ${only}
          order by global_position limit ${limit}) as p on true
        order by p.global_position`)
    : await db.query<FollowRow<R>>(sql`
        -- bound's values as scalar subqueries, not a join: so they start the index scan
        -- on (transaction_id, global_position) where the checkpoint is (joined, they
        -- were only a filter, and each page read the log from its start: measured,
        -- 11 ms for the first page of 2,000 and 100 ms at 200,000 events)
        with bound as (select
          -- the transaction of the checkpoint's event (or of the last one before it)
          coalesce((select transaction_id from events where global_position <= ${afterPosition}
            order by global_position desc limit 1), '0'::xid8) as tx,
          pg_snapshot_xmin(pg_current_snapshot()) as horizon)
        select f.frontier, ${output}
        from (select (select events.global_position from events
            where (events.transaction_id, events.global_position)
                > ((select tx from bound), ${afterPosition})
              and events.transaction_id < (select horizon from bound)
            order by events.transaction_id desc, events.global_position desc
            limit 1) as frontier) as f
        left join (select ${columns}, events.transaction_id as tx_order from events
          where (events.transaction_id, events.global_position)
              > ((select tx from bound), ${afterPosition})
            and events.transaction_id < (select horizon from bound) ${only}
          order by events.transaction_id, events.global_position limit ${limit}) as p on true
        order by p.tx_order, p.global_position`);
  const found = rows.filter((r) => r.global_position != null) as unknown as R[];
  const frontier = rows[0]?.frontier == null ? null : Number(rows[0].frontier);
  const position = found.length === limit
    ? Number(found.at(-1)!.global_position)
    : frontier === null
    ? afterPosition
    : opts.horizon === false
    ? Math.max(afterPosition, frontier)
    : frontier;
  return { rows: found, position };
};
