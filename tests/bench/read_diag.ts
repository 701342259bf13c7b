/**
 * Where readAll's time goes. Pages are sampled at a few points of the log
 * (early, middle, late) through several paths: the store as benchmarked, the
 * same SQL through Db.query (server + wire + postgres.js parsing, no store
 * decode), the SQL with its ORDER BY bound to the table's columns, and the
 * server alone (EXPLAIN ANALYZE). The SQL below mirrors EventStore.readAll;
 * keep it in step when that query changes.
 */
import type { Db } from "../../src/store/db.ts";
import type { EventStore } from "../../src/store/event_store.ts";
import { type Query, sql } from "../../src/store/sql.ts";
import { fmtInt, fmtMs, fmtSec, table } from "./stats.ts";

const COLUMNS = sql`global_position, stream_id, stream_version, event_id::text as event_id, type,
  schema_version, data, metadata, recorded_at, transaction_id::text as transaction_id,
  prev_hash, hash`;

/**
 * readAll's query (horizon on). `order` is spliced verbatim: readAll says
 * `transaction_id, global_position`, which PostgreSQL binds to the *output*
 * column `transaction_id::text as transaction_id`.
 */
const horizonQuery = (columns: Query, order: string, after: number, limit: number): Query => {
  const q = sql`select ${columns} from events
    where (transaction_id, global_position) > (
        coalesce((select transaction_id from events where global_position = ${after}),
          '0'::xid8), ${after})
      and transaction_id < pg_snapshot_xmin(pg_current_snapshot())
    order by `;
  return { text: `${q.text}${order} limit ${Math.trunc(limit)}`, values: q.values };
};
const AS_IS = "transaction_id, global_position";
const BOUND = "events.transaction_id, events.global_position";

type Pos = { global_position: string | number };
/** One page: rows returned and, for a scan, the cursor to continue from. */
type Page = (after: number) => Promise<{ rows: number; last?: number }>;

const serverMs = async (db: Db, q: Query): Promise<number> => {
  const [row] = await db.query<{ "QUERY PLAN": unknown }>({
    text: `explain (analyze, timing off, format json) ${q.text}`,
    values: q.values,
  });
  const raw = row!["QUERY PLAN"];
  const plan = (typeof raw === "string" ? JSON.parse(raw) : raw) as {
    "Execution Time": number;
    "Planning Time": number;
  }[];
  return plan[0]!["Execution Time"] + plan[0]!["Planning Time"];
};

export const diagnoseReadAll = async (
  db: Db,
  store: EventStore,
  limit: number,
): Promise<void> => {
  const [h] = await db.query<{ lo: string | null; hi: string | null }>(
    sql`select min(global_position) as lo, max(global_position) as hi from events`,
  );
  const lo = Number(h?.lo ?? 0), hi = Number(h?.hi ?? 0);
  const fractions = [0, 0.5, 0.9];
  const cursors = fractions.map((f) => Math.max(0, Math.floor(lo - 1 + f * (hi - lo + 1))));

  const rowsOf = async (q: Query) => ({ rows: (await db.query<Pos>(q)).length });
  const paths: { label: string; page: Page; server?: boolean }[] = [
    {
      label: "store.readAll (as benchmarked)",
      page: async (a) => ({ rows: (await store.readAll(a, limit, { unseal: false })).length }),
    },
    {
      label: "store.readAll, horizon: false",
      page: async (a) => ({
        rows: (await store.readAll(a, limit, { unseal: false, horizon: false })).length,
      }),
    },
    {
      label: "Db.query, readAll SQL as is",
      page: (a) => rowsOf(horizonQuery(COLUMNS, AS_IS, a, limit)),
    },
    {
      label: "Db.query, ORDER BY events.* (fix)",
      page: (a) => rowsOf(horizonQuery(COLUMNS, BOUND, a, limit)),
    },
    {
      label: "Db.query, fix, position+data only",
      page: (a) => rowsOf(horizonQuery(sql`global_position, data`, BOUND, a, limit)),
    },
    {
      label: "server only (EXPLAIN ANALYZE), as is",
      page: async (a) => ({
        rows: limit,
        last: await serverMs(db, horizonQuery(COLUMNS, AS_IS, a, limit)),
      }),
      server: true,
    },
    {
      label: "server only (EXPLAIN ANALYZE), fix",
      page: async (a) => ({
        rows: limit,
        last: await serverMs(db, horizonQuery(COLUMNS, BOUND, a, limit)),
      }),
      server: true,
    },
  ];

  const lines: string[][] = [];
  for (const p of paths) {
    await p.page(cursors[cursors.length - 1]!); // warm this path on a cheap page
    const perPage: number[] = [];
    let rows = 0;
    for (const after of cursors) {
      // best of two: this machine is shared and single samples are noisy
      let best = Infinity;
      for (let rep = 0; rep < 2; rep++) {
        const t0 = performance.now();
        const r = await p.page(after);
        best = Math.min(best, p.server ? r.last! : performance.now() - t0);
        if (rep === 0) rows += r.rows;
      }
      perPage.push(best);
    }
    const ms = perPage.reduce((a, b) => a + b, 0);
    lines.push([p.label, ...perPage.map(fmtMs), fmtInt(rows / (ms / 1000))]);
  }
  console.log(
    `\n  ms per page of ${fmtInt(limit)}, best of 2 (log positions ${lo}..${hi}):`,
  );
  console.log(table(
    ["path", ...fractions.map((f) => `page @${f * 100}%`), "rows/s"],
    lines,
    new Set([1, 2, 3, 4]),
  ));

  // A whole pass with the fixed ORDER BY, cheap enough now: what readAll could
  // deliver before the store's decode, with a fold over the parsed data.
  let after = 0, read = 0, sum = 0;
  const t0 = performance.now();
  for (;;) {
    const rows = await db.query<Pos & { data: { by: number } }>(
      horizonQuery(COLUMNS, BOUND, after, limit),
    );
    if (rows.length === 0) break;
    for (const r of rows) sum += r.data.by;
    read += rows.length;
    after = Number(rows[rows.length - 1]!.global_position);
  }
  const ms = performance.now() - t0;
  console.log(
    `\n  full pass, fixed ORDER BY, Db.query + fold (no store decode): ${fmtInt(read)} rows ` +
      `(sum ${fmtInt(sum)}) in ${fmtSec(ms)} = ${fmtInt(read / (ms / 1000))} rows/s`,
  );

  const mid = cursors[1]!;
  for (const [label, order] of [["as is", AS_IS], ["fix", BOUND]] as const) {
    const q = horizonQuery(COLUMNS, order, mid, limit);
    const plan = await db.query<{ "QUERY PLAN": string }>({
      text: `explain (analyze, buffers) ${q.text}`,
      values: q.values,
    });
    console.log(`\n  EXPLAIN (ANALYZE, BUFFERS), readAll page after ${mid}, ORDER BY ${label}:`);
    for (const r of plan) console.log(`    ${r["QUERY PLAN"]}`);
  }
  const [size] = await db.query<{ heap: string; total: string }>(
    sql`select pg_size_pretty(pg_relation_size('events')) as heap,
      pg_size_pretty(pg_total_relation_size('events')) as total`,
  );
  console.log(`\n  events table: heap ${size?.heap}, with indexes ${size?.total}`);
};
