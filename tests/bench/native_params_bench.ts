/**
 * Dates and JSON through the driver port natively (a Date bound as
 * timestamptz, an object or array bound as jsonb) against the text casts
 * they replace (`${d.toISOString()}::text::timestamptz`,
 * `${JSON.stringify(x)}::text::jsonb`), on PostgreSQL (TEST_DATABASE_URL)
 * and PGlite, in one process: each round runs the old and the new form of a
 * statement back to back (in alternating order) inside a transaction that
 * is rolled back. The table prints the median time of each form and the
 * median of the per-round ratios new/old (paired, so that load from other
 * work on the machine cancels out). The A/A row (the old form against
 * itself) shows the noise floor. Issue 11 item 9.
 *
 *   deno run -A tests/bench/native_params_bench.ts [rounds=60]
 */
import type { Db } from "../../src/store/db.ts";
import { migrate } from "../../src/store/migrations.ts";
import { openPglite } from "../../src/store/pglite_driver.ts";
import { openPostgres } from "../../src/store/postgres_driver.ts";
import { type Query, sql } from "../../src/store/sql.ts";
import { createTestDatabase } from "../support/harness.ts";
import { fmtMs, percentile, table } from "./stats.ts";

const rounds = Number(Deno.args[0] ?? 60);

/**
 * Builds a step's data (not timed) and returns what is timed: building the
 * statements (JSON.stringify and toISOString belong to the old forms' cost)
 * and running them.
 */
type Step = () => () => Query[];

interface Case {
  name: string;
  old: Step;
  new: Step;
}

/** Rows as the append path builds them for `jsonb_to_recordset` (one batch, one stream). */
const eventRows = (n: number, at: Date, withTime: boolean, stream = crypto.randomUUID()) =>
  Array.from({ length: n }, (_, i) => ({
    ord: i,
    stream_id: `bench-${stream}`,
    stream_version: i + 1,
    event_id: crypto.randomUUID(),
    type: "PatientRegistered",
    schema_version: 1,
    data: {
      name: { v: 1, k: "patient-x", iv: "a".repeat(16), ct: "b".repeat(120) },
      dateOfBirth: { v: 1, k: "patient-x", iv: "c".repeat(16), ct: "d".repeat(24) },
      gender: "female",
      address: { city: "Lyon", state: null },
    },
    metadata: { actorId: crypto.randomUUID(), requestId: crypto.randomUUID(), reason: "intake" },
    ...(withTime ? { recorded_at: at.toISOString() } : {}),
    prev_hash: i === 0 ? null : "e".repeat(64),
    hash: "f".repeat(64),
  }));

const RECORDSET = sql`stream_id text, stream_version int, event_id uuid, type text,
  schema_version int, data jsonb, metadata jsonb`;

const insertEvents = (rows: unknown, time: Query, cols: Query) =>
  sql`insert into events (stream_id, stream_version, event_id, type, schema_version, data,
      metadata, recorded_at, prev_hash, hash)
    select x.stream_id, x.stream_version, x.event_id, x.type, x.schema_version, x.data,
      x.metadata, ${time}, x.prev_hash, x.hash
    from jsonb_to_recordset(${rows}) as x(ord int, ${RECORDSET}, ${cols} prev_hash text, hash text)
    order by x.ord
    returning global_position, transaction_id::text as transaction_id`;

type AppendForm = "jsonb and per-row time" | "jsonb and one Date" | "text::jsonb and one Date";

/** `times` appends of `n` events each, as one step (single appends are too short to time). */
const appendCase = (n: number, form: AppendForm, times = 1): Case => {
  const at = new Date();
  const perRow = sql`recorded_at timestamptz,`;
  const batches = (withTime: boolean) =>
    Array.from({ length: times }, () => eventRows(n, at, withTime));
  return {
    name: `${times > 1 ? `${times}× ` : ""}append ${n} events: ${form}`,
    old: () => {
      const data = batches(true);
      return () =>
        data.map((rows) =>
          insertEvents(sql`${JSON.stringify(rows)}::text::jsonb`, sql`x.recorded_at`, perRow)
        );
    },
    new: () => {
      const data = batches(form === "jsonb and per-row time");
      return () =>
        data.map((rows) =>
          form === "jsonb and per-row time"
            ? insertEvents(sql`${rows}::jsonb`, sql`x.recorded_at`, perRow)
            : form === "jsonb and one Date"
            ? insertEvents(sql`${rows}::jsonb`, sql`${at}::timestamptz`, sql``)
            : insertEvents(
              sql`${JSON.stringify(rows)}::text::jsonb`,
              sql`${at}::timestamptz`,
              sql``,
            )
        );
    },
  };
};

/** n projection handler writes: an upsert with two timestamps, then an update of one. */
const handlerCase = (n: number): Case => {
  const ids = Array.from({ length: n }, () => crypto.randomUUID());
  const at = new Date();
  const writes = (time: (d: Date) => Query) =>
    ids.flatMap((id, i) => {
      const d = new Date(at.getTime() + i);
      return [
        sql`insert into bench_rows (id, created_at, updated_at) values (${id}::uuid, ${time(d)}, ${
          time(d)
        }) on conflict (id) do update set updated_at = excluded.updated_at`,
        sql`update bench_rows set updated_at = ${time(d)} where id = ${id}::uuid`,
      ];
    });
  return {
    name: `${n}× projection upsert + update (timestamptz Date)`,
    old: () => () => writes((d) => sql`${d.toISOString()}::text::timestamptz`),
    new: () => () => writes((d) => sql`${d}::timestamptz`),
  };
};

/** n jsonb writes of a small document (as session amr, recovery digests). */
const jsonCase = (n: number): Case => {
  const ids = Array.from({ length: n }, () => crypto.randomUUID());
  const doc = { digests: Array.from({ length: 10 }, (_, i) => `${i}`.repeat(43)), amr: ["pwd"] };
  const writes = (json: (x: unknown) => Query) =>
    ids.map((id) =>
      sql`insert into bench_rows (id, created_at, updated_at, doc)
        values (${id}::uuid, now(), now(), ${json(doc)})`
    );
  return {
    name: `${n}× projection insert (jsonb document)`,
    old: () => () => writes((x) => sql`${JSON.stringify(x)}::text::jsonb`),
    new: () => () => writes((x) => sql`${x}::jsonb`),
  };
};

const timeStep = async (db: Db, step: Step): Promise<number> => {
  const build = step();
  const conn = await db.reserve();
  try {
    await conn.query(sql`begin`);
    const t0 = performance.now();
    for (const q of build()) await conn.query(q);
    const ms = performance.now() - t0;
    await conn.query(sql`rollback`);
    return ms;
  } finally {
    await conn.release();
  }
};

const runCase = async (db: Db, c: Case) => {
  const times = { old: [] as number[], new: [] as number[] };
  // warm-up: statements prepared, caches filled
  for (let i = 0; i < 3; i++) {
    await timeStep(db, c.old);
    await timeStep(db, c.new);
  }
  for (let r = 0; r < rounds; r++) {
    const order = r % 2 === 0 ? (["old", "new"] as const) : (["new", "old"] as const);
    for (const form of order) times[form].push(await timeStep(db, c[form]));
  }
  const ratios = times.new.map((n, i) => n / times.old[i]!);
  return [
    c.name,
    fmtMs(percentile(times.old, 0.5)),
    fmtMs(percentile(times.new, 0.5)),
    percentile(ratios, 0.5).toFixed(3),
  ];
};

const aa = appendCase(100, "jsonb and per-row time");
const forms: AppendForm[] = [
  "jsonb and per-row time",
  "jsonb and one Date",
  "text::jsonb and one Date",
];
const hc = handlerCase(100);
const cases: Case[] = [
  { name: "A/A: append 100 events, old form twice", old: aa.old, new: aa.old },
  ...forms.map((f) => appendCase(1, f, 50)),
  ...[100, 1000].flatMap((n) => forms.map((f) => appendCase(n, f))),
  { name: "A/A: 100× projection upsert + update, old form twice", old: hc.old, new: hc.old },
  hc,
  jsonCase(100),
];

const tdb = await createTestDatabase();
const targets: [string, Db][] = [
  ["PostgreSQL", openPostgres(tdb.url, { max: 2 })],
  ["PGlite", await openPglite("memory://")],
];
try {
  for (const [label, db] of targets) {
    await migrate(db);
    await db.exec(`create table bench_rows (id uuid primary key, created_at timestamptz not null,
      updated_at timestamptz not null, doc jsonb)`);
    const out: string[][] = [];
    for (const c of cases) out.push(await runCase(db, c));
    console.log(`\n${label}, ${rounds} rounds, median ms per step`);
    console.log(
      table(["case", "old", "new", "new/old (median of pairs)"], out, new Set([1, 2, 3])),
    );
  }
} finally {
  for (const [, db] of targets) await db.close();
  await tdb.drop();
}
