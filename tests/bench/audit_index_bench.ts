/**
 * What migration 5's audit-query indexes cost an append. Two PostgreSQL
 * databases, both migrated; the second then drops the seven indexes. Rounds
 * alternate between them so load on the shared machine falls on both alike.
 * Each append is a `PatientViewed` with actor and request metadata (the shape
 * of most of the log: an audited read). Prints figures; never asserts.
 *
 *   deno run --allow-all tests/bench/audit_index_bench.ts
 *
 * Knobs: BENCH_IDX_ROUNDS (3), BENCH_IDX_SEQ (1000 single-writer appends per
 * round), BENCH_IDX_CONC (8000 events per round over BENCH_WRITERS=32 writers),
 * BENCH_IDX_DROP (comma list of the indexes to drop; default all seven),
 * BENCH_IDX_VS (none: the second database drops them, the default; full: it
 * has them as migration 5 made them, before migration 12 made the patient,
 * patientIds, actor and grant ones partial, without its statistics objects).
 */
import postgres from "postgres";
import { catalog } from "../../events/index.ts";
import { EventStore } from "../../src/store/event_store.ts";
import { migrate } from "../../src/store/migrations.ts";
import { openPostgres } from "../../src/store/postgres_driver.ts";
import { PhiCodec } from "../../src/store/phi_codec.ts";
import { subjectKeyShredder } from "../../src/store/shred.ts";
import { PG_ADMIN_URL } from "../support/harness.ts";
import { envInt, fmtInt, split } from "./stats.ts";

const rounds = envInt("BENCH_IDX_ROUNDS", 3);
const seqN = envInt("BENCH_IDX_SEQ", 1000);
const concN = envInt("BENCH_IDX_CONC", 8000);
const writers = envInt("BENCH_WRITERS", 32);
const ALL_INDEXES = [
  "events_audit_patient",
  "events_audit_patient_ids",
  "events_audit_denied_resource",
  "events_audit_actor",
  "events_audit_grant",
  "events_audit_type",
  "events_audit_time",
];
// BENCH_IDX_DROP: a comma list of the indexes the second database drops (default: all seven)
const INDEXES = (Deno.env.get("BENCH_IDX_DROP") ?? "").split(",").map((s) => s.trim())
  .filter(Boolean);
if (INDEXES.length === 0) INDEXES.push(...ALL_INDEXES);
for (const i of INDEXES) if (!ALL_INDEXES.includes(i)) throw new Error(`BENCH_IDX_DROP: ${i}?`);
// migration 5's forms of the indexes migration 12 made partial, and the statistics it added
const FULL: Record<string, [string, string]> = {
  events_audit_patient: ["events_stat_patient", "((data->>'patientId'), global_position)"],
  events_audit_patient_ids: [
    "events_stat_patient_ids",
    "using gin ((data->'patientIds') jsonb_path_ops)",
  ],
  events_audit_actor: ["events_stat_actor", "((metadata->>'actorId'), global_position)"],
  events_audit_grant: ["events_stat_grant", "((metadata->>'grantId'), global_position)"],
};
const VS = Deno.env.get("BENCH_IDX_VS") ?? "none";
if (VS !== "none" && VS !== "full") throw new Error(`BENCH_IDX_VS: ${VS}?`);
const VS_WORDS = VS === "full"
  ? "partial vs migration 5's full indexes"
  : "with vs without the indexes";

const admin = postgres(PG_ADMIN_URL, { max: 1, onnotice: () => {} });
const names: string[] = [];
const open = async (withIndexes: boolean) => {
  const name = `chartlog_bench_${crypto.randomUUID().replaceAll("-", "").slice(0, 16)}`;
  await admin.unsafe(`create database ${name}`);
  names.push(name);
  const url = new URL(PG_ADMIN_URL);
  url.pathname = `/${name}`;
  const db = openPostgres(url.toString(), { max: writers });
  await migrate(db);
  for (const i of withIndexes ? [] : INDEXES) {
    const full = FULL[i];
    if (VS === "none") await db.exec(`drop index ${i}`);
    else if (full) {
      await db.exec(`drop index ${i}; drop statistics ${full[0]};
        create index ${i} on events ${full[1]}`);
    }
  }
  const codec = new PhiCodec(db, crypto.getRandomValues(new Uint8Array(32)));
  return { db, store: new EventStore({ db, catalog, codec, shredder: subjectKeyShredder(codec) }) };
};

const appendOne = (store: EventStore, stream: string, expected: number) =>
  store.append(
    stream,
    expected === 0 ? "no_stream" : expected,
    [{ type: "PatientViewed", data: { patientId: crypto.randomUUID(), asOf: null } }],
    {
      actorId: crypto.randomUUID(),
      actorRole: "practitioner",
      ip: "127.0.0.1",
      userAgent: "bench",
      requestId: crypto.randomUUID(),
    },
  );

const seq = async (store: EventStore) => {
  const stream = `access-${crypto.randomUUID()}`;
  const t0 = performance.now();
  for (let i = 0; i < seqN; i++) await appendOne(store, stream, i);
  return seqN / ((performance.now() - t0) / 1000);
};
const conc = async (store: EventStore) => {
  const t0 = performance.now();
  await Promise.all(
    split(concN, writers).map(async (n) => {
      const stream = `access-${crypto.randomUUID()}`;
      for (let i = 0; i < n; i++) await appendOne(store, stream, i);
    }),
  );
  return concN / ((performance.now() - t0) / 1000);
};

const withIdx = await open(true);
const without = await open(false);
try {
  const r = { seq: [0, 0], conc: [0, 0] };
  for (const s of [withIdx, without]) await seq(s.store); // warm-up
  for (let round = 1; round <= rounds; round++) {
    const a = await seq(withIdx.store), b = await seq(without.store);
    const c = await conc(withIdx.store), d = await conc(without.store);
    r.seq[0]! += a, r.seq[1]! += b, r.conc[0]! += c, r.conc[1]! += d;
    console.log(
      `round ${round}: 1 writer ${fmtInt(a)} vs ${fmtInt(b)} events/s; ` +
        `${writers} writers ${fmtInt(c)} vs ${fmtInt(d)} events/s (${VS_WORDS})`,
    );
  }
  const ratio = (x: number[]) => (x[0]! / x[1]!).toFixed(2);
  console.log(
    `append ${VS_WORDS.replace(" vs ", " / ")}: 1 writer ${ratio(r.seq)}, ${writers} writers ${
      ratio(r.conc)
    } (load ${Deno.loadavg().map((l) => l.toFixed(1)).join(" ")})`,
  );
} finally {
  await withIdx.db.close();
  await without.db.close();
  for (const n of names) await admin.unsafe(`drop database if exists ${n} with (force)`);
  await admin.end();
}
