/**
 * The `export` section of `deno task bench`: the audit export's rate per
 * format over a log of BENCH_EXPORT_EVENTS events (default 1,000,000) on a
 * fresh PostgreSQL database, filled with one `insert … select … from
 * generate_series` (tests/support/export_seed.ts). Each format is streamed
 * in process, as the route and the CLI stream it, into a sink that only
 * counts bytes. Target: 50,000 events/s. Prints figures; never asserts on time.
 *
 *   deno task bench                                  (with the other sections)
 *   BENCH_ONLY=export deno task bench
 *   deno run -A tests/bench/export_bench.ts          (this section alone)
 */
import { catalog } from "../../events/index.ts";
import { type ExportFormat, exportStream, exportUpTo } from "../../src/audit/export.ts";
import { EventStore } from "../../src/store/event_store.ts";
import { migrate } from "../../src/store/migrations.ts";
import { openPostgres } from "../../src/store/postgres_driver.ts";
import { PhiCodec } from "../../src/store/phi_codec.ts";
import { subjectKeyShredder } from "../../src/store/shred.ts";
import { createTestDatabase } from "../support/harness.ts";
import { seedReads } from "../support/export_seed.ts";
import { envInt, fmtInt, fmtSec, type SectionDeps } from "./stats.ts";

const TARGET = 50_000;
const FORMATS: ExportFormat[] = ["jsonl", "csv", "fhir"];

/** Runs the section; returns its summary lines. */
export const exportBench = async (
  deps: Pick<SectionDeps, "newPgDatabase" | "scoped" | "add" | "pool">,
): Promise<string[]> => {
  const n = envInt("BENCH_EXPORT_EVENTS", 1_000_000);
  return await deps.scoped(async () => {
    const url = await deps.newPgDatabase();
    const db = openPostgres(url, { max: 4 });
    try {
      await migrate(db);
      const codec = new PhiCodec(db, crypto.getRandomValues(new Uint8Array(32)));
      const store = new EventStore({
        db,
        catalog,
        codec,
        shredder: subjectKeyShredder(codec),
        projections: [],
      });
      console.log(`  seeding ${fmtInt(n)} events (one insert … select)...`);
      const s0 = performance.now();
      await seedReads(db, n, crypto.randomUUID());
      await db.exec("vacuum (analyze) events");
      console.log(`  seeded in ${fmtSec(performance.now() - s0)}`);
      const upTo = await exportUpTo(store);
      const summary: string[] = [];
      for (const format of FORMATS) {
        let bytes = 0;
        const t0 = performance.now();
        await exportStream(store, format, {}, {
          upTo,
          server: "bench.chartlog.test",
          now: new Date(),
        }).pipeTo(
          new WritableStream({
            write(chunk) {
              bytes += chunk.byteLength;
            },
          }),
        );
        const ms = performance.now() - t0;
        const rate = n / (ms / 1000);
        deps.add({
          workload: `export ${format} (${fmtInt(n)} events)`,
          backend: "PostgreSQL",
          impl: "Chartlog",
          m: { events: n, appends: n, ms, latencies: [] },
          latencyOf: "-",
          note: `${(bytes / 1024 / 1024).toFixed(0)} MiB`,
        });
        const line = `export ${format}: ${fmtInt(rate)} events/s over ${fmtInt(n)} events ` +
          `(${fmtSec(ms)}, ${(bytes / 1024 / 1024).toFixed(0)} MiB) vs target ${fmtInt(TARGET)}: ` +
          (rate >= TARGET ? "meets target" : "BELOW target");
        console.log(`  ${line}`);
        summary.push(line);
      }
      return summary;
    } finally {
      await db.close();
    }
  });
};

if (import.meta.main) {
  const drops: (() => Promise<void>)[] = [];
  try {
    await exportBench({
      newPgDatabase: async () => {
        const d = await createTestDatabase();
        drops.push(d.drop);
        return d.url;
      },
      scoped: (fn) => fn(),
      add: () => {},
      pool: 4,
    });
  } finally {
    for (const d of drops) await d();
  }
}
