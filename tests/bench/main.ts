/**
 * Chartlog append/read benchmark. Prints figures; never asserts on time.
 *
 *   deno task bench
 *
 * Every PostgreSQL workload runs on a fresh database of its own,
 * chartlog_bench_*, created on TEST_DATABASE_URL's server and dropped at the
 * end, also on failure or Ctrl-C; PGlite runs in memory. Knobs (positive
 * integers):
 *
 *   BENCH_SEQ_APPENDS   sequential single-event appends          (default 2000)
 *   BENCH_EVENTS        events in the concurrent-writers workload (default 10000)
 *   BENCH_WRITERS       concurrent writers                       (default 32)
 *   BENCH_POOL          PostgreSQL pool size, ours and Emmett's  (default 32)
 *   BENCH_WARMUP        untimed appends before each workload     (default 50)
 *   BENCH_ROUNDS        PostgreSQL append workloads run in this many rounds,
 *                       the implementations taking turns          (default 5)
 *   BENCH_READ_EVENTS   events seeded, then read with readAll    (default 1000000)
 *   BENCH_READ_BATCH    readAll page size                        (default 5000)
 *   BENCH_READ_BUDGET_S stop reading after this many seconds and report
 *                       the partial figure (default 60)
 *   BENCH_SEED_BATCH    events per seeding append                (default 5000)
 *   BENCH_SEED_WRITERS  concurrent seeding appenders             (default 2)
 *   BENCH_READ_DIAG     1: always break the readAll time down (default: only below target)
 *   BENCH_ONLY          comma list of sections: ours-pg (with the raw postgres.js
 *                       single-row-commit loop that target 1 compares with), pglite, emmett,
 *                       read, auth, patients, media, multipart, export, tlog, memory,
 *                       rebuild (default: all)
 *   BENCH_TLOG_EVENTS   events seeded for the transparency-log section (default 1000000)
 *   BENCH_REBUILD_EVENTS events of the patients projection rebuilt in the rebuild section
 *                       (default 1000000; see patients_rebuild_bench.ts)
 *
 * The auth section (logins, token checks) has knobs of its own: see auth_bench.ts;
 * so has the patients section (audited PHI reads over HTTP): see patients_bench.ts;
 * so has the media section (photo uploads over HTTP): see media_bench.ts; the multipart
 * section (parsing a 10 MB upload alone) is multipart_bench.ts; the export section (audit
 * export rate per format, BENCH_EXPORT_EVENTS, default 1000000) is export_bench.ts; the memory
 * section (idle RSS of a started server on PGlite and PostgreSQL) is memory_bench.ts.
 */
import pg from "pg";
import postgres from "postgres";
import type { Event } from "@event-driven-io/emmett";
import { getPostgreSQLEventStore } from "@event-driven-io/emmett-postgresql";
import { EventStore } from "../../src/store/event_store.ts";
import { subjectKeyShredder } from "../../src/store/shred.ts";
import { migrate } from "../../src/store/migrations.ts";
import { openPglite } from "../../src/store/pglite_driver.ts";
import { openPostgres } from "../../src/store/postgres_driver.ts";
import { PhiCodec } from "../../src/store/phi_codec.ts";
import type { Db } from "../../src/store/db.ts";
import { testCatalog } from "../fixtures/test_events.ts";
import { PG_ADMIN_URL } from "../support/harness.ts";
import { authBench } from "./auth_bench.ts";
import { exportBench } from "./export_bench.ts";
import { mediaBench } from "./media_bench.ts";
import { memoryBench } from "./memory_bench.ts";
import { multipartBench } from "./multipart_bench.ts";
import { patientsBench } from "./patients_bench.ts";
import { tlogBench } from "./tlog_bench.ts";
import { patientsRebuildBench } from "./patients_rebuild_bench.ts";
import { diagnoseReadAll } from "./read_diag.ts";
import { envInt, fmtInt, fmtMs, fmtSec, percentile, split, table } from "./stats.ts";

const cfg = {
  seqAppends: envInt("BENCH_SEQ_APPENDS", 2000),
  events: envInt("BENCH_EVENTS", 10_000),
  writers: envInt("BENCH_WRITERS", 32),
  pool: envInt("BENCH_POOL", 32),
  warmup: envInt("BENCH_WARMUP", 50),
  rounds: envInt("BENCH_ROUNDS", 5),
  readEvents: envInt("BENCH_READ_EVENTS", 1_000_000),
  readBatch: envInt("BENCH_READ_BATCH", 5000),
  readBudgetMs: envInt("BENCH_READ_BUDGET_S", 60) * 1000,
  seedBatch: envInt("BENCH_SEED_BATCH", 5000),
  seedWriters: envInt("BENCH_SEED_WRITERS", 2),
  readDiag: Deno.env.get("BENCH_READ_DIAG") === "1",
};
const READ_TARGET = 100_000;
const SECTIONS = [
  "ours-pg",
  "pglite",
  "emmett",
  "read",
  "auth",
  "patients",
  "media",
  "multipart",
  "export",
  "tlog",
  "memory",
  "rebuild",
] as const;
type Section = (typeof SECTIONS)[number];
const only = (Deno.env.get("BENCH_ONLY") ?? "").split(",").map((s) => s.trim()).filter(Boolean);
for (const s of only) {
  if (!SECTIONS.includes(s as Section)) throw new Error(`BENCH_ONLY: unknown section ${s}`);
}
const enabled = (s: Section) => only.length === 0 || only.includes(s);

// ---------------------------------------------------------------------------
// Resources: every database, pool and store registers its cleanup here, so a
// failure or a signal still closes pools and drops the databases.

const cleanups: { label: string; fn: () => Promise<void> }[] = [];
const defer = (label: string, fn: () => Promise<void>) => cleanups.push({ label, fn });
let unwinding: Promise<void> = Promise.resolve();
/**
 * Releases registered resources down to `depth`, newest first. Unwinds run one
 * after another, so when one resolves every cleanup started before it is done.
 */
const unwindTo = (depth: number): Promise<void> =>
  unwinding = unwinding.then(async () => {
    while (cleanups.length > depth) {
      const { label, fn } = cleanups.pop()!;
      try {
        await fn();
      } catch (err) {
        console.error(`cleanup "${label}" failed: ${err}`);
      }
    }
  });
/** Runs `fn`; the resources it registered are released when it ends, however it ends. */
const scoped = async <T>(fn: () => Promise<T>): Promise<T> => {
  const depth = cleanups.length;
  try {
    return await fn();
  } finally {
    await unwindTo(depth);
  }
};
let interrupted = false;
let finalCleanup: Promise<void> | undefined;
/** Releases everything still registered; concurrent callers share one run. */
const cleanupAll = () => (finalCleanup ??= unwindTo(0));
// A driver may throw outside any await of ours (an 'error' event, a stray
// rejection): release everything before exiting rather than leave databases behind.
const fatal = (what: string, reason: unknown) => {
  if (interrupted) return;
  interrupted = true;
  console.error(`\n${what}:`, reason);
  cleanupAll().finally(() => Deno.exit(1));
};
globalThis.addEventListener("error", (e) => {
  e.preventDefault();
  fatal("uncaught error", e.error);
});
globalThis.addEventListener("unhandledrejection", (e) => {
  e.preventDefault();
  fatal("unhandled rejection", e.reason);
});
for (const sig of ["SIGINT", "SIGTERM"] as const) {
  Deno.addSignalListener(sig, () => {
    if (interrupted) return;
    interrupted = true;
    console.error(`\n${sig}: closing pools and dropping the bench databases...`);
    cleanupAll().finally(() => Deno.exit(130));
  });
}

/**
 * A fresh database on the server, dropped at the end (as the test harness's
 * createTestDatabase does, but named chartlog_bench_* so a leftover is
 * recognisable as ours).
 */
const newPgDatabase = async (): Promise<string> => {
  const name = `chartlog_bench_${crypto.randomUUID().replaceAll("-", "").slice(0, 16)}`;
  const admin = () => postgres(PG_ADMIN_URL, { max: 1, onnotice: () => {} });
  const a = admin();
  try {
    await a.unsafe(`create database ${name}`);
  } finally {
    await a.end();
  }
  defer(`drop database ${name}`, async () => {
    const d = admin();
    try {
      await d.unsafe(`drop database if exists ${name} with (force)`);
    } finally {
      await d.end();
    }
  });
  const url = new URL(PG_ADMIN_URL);
  url.pathname = `/${name}`;
  return url.toString();
};

const newStore = (db: Db, maxBatchEvents?: number) => {
  const codec = new PhiCodec(db, crypto.getRandomValues(new Uint8Array(32)));
  return new EventStore({
    db,
    catalog: testCatalog,
    codec,
    shredder: subjectKeyShredder(codec),
    maxBatchEvents,
  });
};

const openOursPg = async (maxBatchEvents?: number) => {
  const url = await newPgDatabase();
  const db = openPostgres(url, { max: cfg.pool });
  defer("close pool", () => db.close());
  await migrate(db);
  return { db, store: newStore(db, maxBatchEvents) };
};

const openOursPglite = async () => {
  const db = await openPglite("memory://");
  defer("close pglite", () => db.close());
  await migrate(db);
  return { db, store: newStore(db) };
};

type Counter = Event<"CounterIncremented", { by: number }>;

const openEmmett = async () => {
  const url = await newPgDatabase();
  // Emmett's default pool is node-postgres with max 10; hand it one sized like ours.
  const pool = new pg.Pool({ connectionString: url, max: cfg.pool });
  // an idle client losing its connection is emitted, and fatal if nobody listens
  pool.on("error", (err) => console.error(`emmett pool: ${err.message}`));
  defer("end emmett pool", () => pool.end());
  const es = getPostgreSQLEventStore(url, { connectionOptions: { pool } });
  defer("close emmett", () => es.close());
  // It would create its schema on first use; do it up front, outside the timings.
  await es.schema.migrate();
  return es;
};

// ---------------------------------------------------------------------------
// Workloads. An appender appends one CounterIncremented {by: 1} to `stream`,
// expecting the stream to be at exactly `expected`.

type Appender = (stream: string, expected: number) => Promise<unknown>;

const oursAppender = (store: EventStore): Appender => (stream, expected) =>
  store.append(stream, expected, [{ type: "CounterIncremented", data: { by: 1 } }]);

const emmettAppender =
  (es: ReturnType<typeof getPostgreSQLEventStore>): Appender => (stream, expected) =>
    es.appendToStream<Counter>(stream, [{ type: "CounterIncremented", data: { by: 1 } }], {
      expectedStreamVersion: BigInt(expected),
    });

interface Measured {
  events: number;
  appends: number;
  ms: number;
  latencies: number[];
}

const runId = () => crypto.randomUUID().slice(0, 8);

/** `n` appends to one stream, each awaited before the next. */
const sequential = async (append: Appender, n: number): Promise<Measured> => {
  const stream = `counter-seq${runId()}`;
  const latencies: number[] = [];
  const t0 = performance.now();
  for (let i = 0; i < n; i++) {
    const s = performance.now();
    await append(stream, i);
    latencies.push(performance.now() - s);
  }
  return { events: n, appends: n, ms: performance.now() - t0, latencies };
};

/** `writers` callers, each appending its share of `total` to its own stream, one at a time. */
const concurrent = async (append: Appender, writers: number, total: number): Promise<Measured> => {
  const id = runId();
  const latencies: number[] = [];
  const t0 = performance.now();
  await Promise.all(
    split(total, writers).map(async (count, w) => {
      const stream = `counter-w${id}x${w}`;
      for (let i = 0; i < count; i++) {
        const s = performance.now();
        await append(stream, i);
        latencies.push(performance.now() - s);
      }
    }),
  );
  return { events: total, appends: total, ms: performance.now() - t0, latencies };
};

/** Untimed: JIT, connections, plan caches; a sequential run then a concurrent burst. */
const warmUp = async (append: Appender) => {
  await sequential(append, cfg.warmup);
  await concurrent(append, cfg.writers, Math.max(cfg.writers, cfg.warmup));
};

interface Row {
  workload: string;
  backend: string;
  impl: string;
  m: Measured;
  latencyOf?: string;
  note?: string;
}
const results: Row[] = [];
const rate = (m: Measured) => m.events / (m.ms / 1000);

const record = (row: Row) => {
  results.push(row);
  const { m } = row;
  console.log(
    `  ${row.impl} ${row.backend} ${row.workload}: ${fmtInt(rate(m))} events/s, ` +
      `p50 ${fmtMs(percentile(m.latencies, 0.5))} ms, p99 ${
        fmtMs(percentile(m.latencies, 0.99))
      } ms` +
      ` (${fmtSec(m.ms)})`,
  );
};

const SEQ = () => `sequential x${fmtInt(cfg.seqAppends)}`;
const CONC = () => `${cfg.writers} writers, ${fmtInt(cfg.events)} ev`;

const appendSuite = async (backend: string, impl: string, append: Appender) => {
  await warmUp(append);
  record({ workload: SEQ(), backend, impl, m: await sequential(append, cfg.seqAppends) });
  record({
    workload: CONC(),
    backend,
    impl,
    m: await concurrent(append, cfg.writers, cfg.events),
  });
};

/**
 * The floor of a one-writer append: what postgres.js does with single-row
 * autocommit inserts of the same row (events' columns, a CounterIncremented
 * {by: 1} with its ids, hashes and timestamp) into a scratch table, each
 * awaited before the next. Two tables: with events' columns only (what
 * target 1 compares with), and with its indexes too (what an append to the
 * log also maintains; shown beside it).
 */
const openRaw = async (): Promise<[string, Appender][]> => {
  const url = await newPgDatabase();
  const sql = postgres(url, { max: 1, onnotice: () => {} });
  defer("end raw pool", () => sql.end({ timeout: 5 }));
  const db = openPostgres(url, { max: 1 });
  defer("close raw migrate pool", () => db.close());
  await migrate(db);
  // events' columns (its identity, defaults and checks); no indexes, no triggers
  await sql.unsafe(`create table raw_events (like events including defaults including identity
    including constraints)`);
  await sql.unsafe(`create table raw_events_indexed (like events including all)`);
  const hex = () =>
    Array.from(crypto.getRandomValues(new Uint8Array(32)), (b) => b.toString(16).padStart(2, "0"))
      .join("");
  const rawAppender = (table: string): Appender => async (stream, expected) => {
    await sql.unsafe(
      `insert into ${table} (stream_id, stream_version, event_id, type, schema_version, data,
        metadata, recorded_at, prev_hash, hash)
        values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`,
      [
        stream,
        expected + 1,
        crypto.randomUUID(),
        "CounterIncremented",
        1,
        { by: 1 },
        {},
        new Date().toISOString(),
        expected === 0 ? null : hex(),
        hex(),
      ] as postgres.ParameterOrJSON<never>[],
      { prepare: true },
    );
  };
  return [[RAW, rawAppender("raw_events")], [RAW_INDEXED, rawAppender("raw_events_indexed")]];
};
const RAW = "postgres.js insert";
const RAW_INDEXED = "postgres.js insert, events' indexes";

const merge = (a: Measured | undefined, b: Measured): Measured =>
  a
    ? {
      events: a.events + b.events,
      appends: a.appends + b.appends,
      ms: a.ms + b.ms,
      latencies: a.latencies.concat(b.latencies),
    }
    : b;

/**
 * Every enabled PostgreSQL append implementation, each workload run in
 * BENCH_ROUNDS rounds that take turns (ours, raw, Emmett, ours, ...): the
 * machine's load drifts during a run, and the ratios compare figures taken
 * side by side rather than a minute apart. The raw inserts run the
 * one-writer workload only.
 */
const postgresAppendSuites = async () => {
  const impls: { impl: string; append: Appender; concurrent: boolean }[] = [];
  if (enabled("ours-pg")) {
    const { store } = await openOursPg();
    impls.push({ impl: "Chartlog", append: oursAppender(store), concurrent: true });
    for (const [impl, append] of await openRaw()) impls.push({ impl, append, concurrent: false });
  }
  if (enabled("emmett")) {
    impls.push({ impl: "Emmett", append: emmettAppender(await openEmmett()), concurrent: true });
  }
  for (const { impl, append, concurrent: c } of impls) {
    console.log(`  warming up ${impl}`);
    await (c ? warmUp(append) : sequential(append, cfg.warmup));
  }
  const rounds = cfg.rounds;
  const seq = new Map<string, Measured>(), conc = new Map<string, Measured>();
  for (let r = 0; r < rounds; r++) {
    for (const { impl, append } of impls) {
      seq.set(
        impl,
        merge(seq.get(impl), await sequential(append, split(cfg.seqAppends, rounds)[r]!)),
      );
    }
  }
  for (let r = 0; r < rounds; r++) {
    for (const { impl, append, concurrent: c } of impls) {
      if (!c) continue;
      const n = split(cfg.events, rounds)[r]!;
      conc.set(impl, merge(conc.get(impl), await concurrent(append, cfg.writers, n)));
    }
  }
  for (const { impl } of impls) {
    record({ workload: SEQ(), backend: "PostgreSQL", impl, m: seq.get(impl)! });
    if (conc.has(impl)) {
      record({ workload: CONC(), backend: "PostgreSQL", impl, m: conc.get(impl)! });
    }
  }
};

// ---------------------------------------------------------------------------
// readAll over a big log

const readWorkload = async () => {
  // group commit may put up to two seeding appends in one transaction
  const { db, store } = await openOursPg(2 * cfg.seedBatch);
  const n = cfg.readEvents;
  console.log(
    `  seeding ${
      fmtInt(n)
    } events (${cfg.seedWriters} appenders x ${cfg.seedBatch}-event appends)...`,
  );
  const seedStart = performance.now();
  const sizes = split(n, Math.ceil(n / cfg.seedBatch));
  const id = runId();
  let next = 0;
  await Promise.all(Array.from({ length: cfg.seedWriters }, async () => {
    while (next < sizes.length) {
      const s = next++;
      const events = Array.from(
        { length: sizes[s]! },
        () => ({ type: "CounterIncremented", data: { by: 1 } }),
      );
      await store.append(`counter-seed${id}x${s}`, 0, events);
    }
  }));
  const seedAppendMs = performance.now() - seedStart;
  const v0 = performance.now();
  await db.exec("vacuum (analyze) events");
  const vacuumMs = performance.now() - v0;
  console.log(
    `  seeded in ${fmtSec(seedAppendMs)} (${fmtInt(n / (seedAppendMs / 1000))} events/s), ` +
      `vacuum analyze ${fmtSec(vacuumMs)}`,
  );

  const latencies: number[] = [];
  let after = 0, read = 0, sum = 0, partial = false;
  const t0 = performance.now();
  for (;;) {
    if (performance.now() - t0 > cfg.readBudgetMs) {
      partial = true;
      break;
    }
    const s = performance.now();
    const page = await store.readAll(after, cfg.readBatch, { unseal: false });
    latencies.push(performance.now() - s);
    if (page.length === 0) break;
    for (const e of page) sum += (e.data as { by: number }).by;
    read += page.length;
    after = page[page.length - 1]!.globalPosition;
  }
  const ms = performance.now() - t0;
  const m: Measured = { events: read, appends: 0, ms, latencies };
  const fold = partial
    ? `PARTIAL: stopped at the ${fmtSec(cfg.readBudgetMs)} budget after ${fmtInt(read)} events`
    : read === n && sum === n
    ? "fold ok"
    : `FOLD MISMATCH: read ${read}, sum ${sum}, expected ${n}`;
  record({
    workload: `readAll+fold ${fmtInt(n)} ev`,
    backend: "PostgreSQL",
    impl: "Chartlog",
    m,
    latencyOf: `readAll(${cfg.readBatch})`,
    note: `seed ${fmtSec(seedAppendMs)} + vacuum ${fmtSec(vacuumMs)}; ${fold}`,
  });
  if (cfg.readDiag || rate(m) < READ_TARGET) {
    console.log(
      `\n  readAll below ${fmtInt(READ_TARGET)} events/s target or BENCH_READ_DIAG=1: breakdown`,
    );
    await diagnoseReadAll(db, store, cfg.readBatch);
  }
};

// ---------------------------------------------------------------------------

const loadavg = () => {
  try {
    return Deno.readTextFileSync("/proc/loadavg").split(" ").slice(0, 3).join(" ");
  } catch {
    return "n/a";
  }
};

const main = async () => {
  const started = performance.now();
  console.log(`Chartlog benchmark — ${new Date().toISOString()}`);
  console.log(
    `Deno ${Deno.version.deno}, ${navigator.hardwareConcurrency} cores; PostgreSQL at ` +
      `${new URL(PG_ADMIN_URL).host}; pool max ${cfg.pool} (ours and Emmett's); ` +
      `${cfg.warmup} untimed warm-up appends + a ${cfg.writers}-writer burst before each append suite`,
  );
  console.log(JSON.stringify(cfg));
  console.log(`load average at start: ${loadavg()} (other processes skew every figure)`);

  if (enabled("ours-pg") || enabled("emmett")) {
    console.log(
      `\n[Appends on PostgreSQL: ${
        [
          enabled("ours-pg") ? "Chartlog, raw postgres.js single-row inserts" : "",
          enabled("emmett") ? "Emmett 0.42.0" : "",
        ].filter(Boolean).join(", ")
      }; ${cfg.rounds} alternating rounds]`,
    );
    await scoped(postgresAppendSuites);
  }
  if (enabled("pglite")) {
    console.log("\n[Chartlog on PGlite (memory)]");
    await scoped(async () => {
      const { store } = await openOursPglite();
      await appendSuite("PGlite", "Chartlog", oursAppender(store));
    });
  }
  if (enabled("read")) {
    console.log("\n[Chartlog readAll on PostgreSQL]");
    await scoped(readWorkload);
  }
  if (enabled("auth")) {
    console.log("\n[Auth: logins and access-token checks]");
    await authBench({ newPgDatabase, defer, scoped, add: (r) => results.push(r), pool: cfg.pool });
  }
  let patientsSummary: string[] = [];
  if (enabled("patients")) {
    console.log("\n[Patients: audited PHI reads over the HTTP app]");
    patientsSummary = await patientsBench({
      newPgDatabase,
      defer,
      scoped,
      add: (r) => results.push(r),
      pool: cfg.pool,
    });
  }
  let mediaSummary: string[] = [];
  if (enabled("media")) {
    console.log("\n[Media: photo uploads over the HTTP app]");
    mediaSummary = await mediaBench({
      newPgDatabase,
      defer,
      scoped,
      add: (r) => results.push(r),
      pool: cfg.pool,
    });
  }
  let multipartSummary: string[] = [];
  if (enabled("multipart")) {
    console.log("\n[Multipart: a 10 MB upload parsed alone]");
    multipartSummary = await multipartBench();
  }
  let exportSummary: string[] = [];
  if (enabled("export")) {
    console.log("\n[Audit export: each format over a seeded log on PostgreSQL]");
    exportSummary = await exportBench({
      newPgDatabase,
      scoped,
      add: (r) => results.push(r),
      pool: cfg.pool,
    });
  }
  let tlogSummary: string[] = [];
  if (enabled("tlog")) {
    console.log("\n[Transparency log: tree build, checkpoint, proofs, verify on PostgreSQL]");
    tlogSummary = await tlogBench();
  }
  let memorySummary: string[] = [];
  if (enabled("memory")) {
    console.log("\n[Memory: an idle server started as `deno task start`, PGlite and PostgreSQL]");
    memorySummary = await memoryBench({ newPgDatabase, scoped });
  }
  let rebuildSummary: string[] = [];
  if (enabled("rebuild")) {
    console.log("\n[Projection rebuild: the patients projection on PostgreSQL]");
    rebuildSummary = await patientsRebuildBench();
  }

  console.log("\n## Results\n");
  console.log(table(
    [
      "workload",
      "backend",
      "impl",
      "events",
      "time",
      "events/s",
      "p50 ms",
      "p99 ms",
      "latency of",
      "note",
    ],
    results.map((r) => [
      r.workload,
      r.backend,
      r.impl,
      fmtInt(r.m.events),
      fmtSec(r.m.ms),
      rate(r.m) < 100 ? rate(r.m).toFixed(2) : fmtInt(rate(r.m)), // logins: a few per second
      fmtMs(percentile(r.m.latencies, 0.5)),
      fmtMs(percentile(r.m.latencies, 0.99)),
      r.latencyOf ?? "append",
      r.note ?? "",
    ]),
    new Set([3, 4, 5, 6, 7]),
  ));

  const find = (impl: string, workload: string) =>
    results.find((r) => r.impl === impl && r.backend === "PostgreSQL" && r.workload === workload);
  const ratios = [SEQ(), CONC()].flatMap((w) => {
    const ours = find("Chartlog", w), theirs = find("Emmett", w);
    return ours && theirs
      ? [[
        w,
        fmtInt(rate(ours.m)),
        fmtInt(rate(theirs.m)),
        (rate(ours.m) / rate(theirs.m)).toFixed(2),
      ]]
      : [];
  });
  if (ratios.length > 0) {
    console.log("\n## Chartlog vs Emmett on PostgreSQL (events/s)\n");
    console.log(table(
      ["workload", "Chartlog", "Emmett", "ours/theirs"],
      ratios,
      new Set([1, 2, 3]),
    ));
  }
  // issue 15, targets 1 and 2: ratios within this run
  const targets: [string, Row | undefined, Row | undefined, number][] = [
    ["target 1, append 1 writer vs Emmett", find("Chartlog", SEQ()), find("Emmett", SEQ()), 1.5],
    [
      "target 1, append 1 writer vs raw postgres.js single-row commits",
      find("Chartlog", SEQ()),
      find(RAW, SEQ()),
      0.8,
    ],
    ["target 2, append 32 writers vs Emmett", find("Chartlog", CONC()), find("Emmett", CONC()), 10],
  ];
  const lines = targets.filter(([, a, b]) => a && b).map(([what, a, b, goal]) => {
    const r = rate(a!.m) / rate(b!.m);
    return `${what}: ${fmtInt(rate(a!.m))} / ${fmtInt(rate(b!.m))} = ${r.toFixed(2)} ` +
      `(target >= ${goal}): ${r >= goal ? "meets" : "below"}`;
  });
  const ours = find("Chartlog", SEQ()), indexed = find(RAW_INDEXED, SEQ());
  if (ours && indexed) {
    lines.push(
      `(for reference, not a target: append 1 writer vs the same inserts into a table with ` +
        `events' indexes: ${(rate(ours.m) / rate(indexed.m)).toFixed(2)})`,
    );
  }
  if (lines.length > 0) console.log("\n" + lines.join("\n"));
  const read = results.find((r) => r.workload.startsWith("readAll"));
  if (read) {
    const r = rate(read.m);
    console.log(
      `\nreadAll: ${fmtInt(r)} events/s vs target ${fmtInt(READ_TARGET)}: ` +
        (r >= READ_TARGET ? "meets target" : "BELOW target") +
        (read.note?.startsWith("PARTIAL") ? ` (${read.note})` : ""),
    );
  }
  for (const line of patientsSummary) console.log(line);
  for (const line of mediaSummary) console.log(line);
  for (const line of multipartSummary) console.log(line);
  for (const line of exportSummary) console.log(line);
  for (const line of tlogSummary) console.log(line);
  for (const line of memorySummary) console.log(line);
  for (const line of rebuildSummary) console.log(line);
  console.log(`\nload average at end: ${loadavg()}`);
  console.log(`total run time ${fmtSec(performance.now() - started)}`);
};

try {
  await main();
} catch (err) {
  // after a signal, in-flight queries fail as their pools close: not worth a trace
  if (!interrupted) throw err;
} finally {
  await cleanupAll();
}
