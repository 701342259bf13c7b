/**
 * A rebuild of a projection over a log where most events are of types it
 * does not handle, the way replays used to run (read, decode and unseal every
 * event, then skip the unhandled ones in JS) and as they run now (only the
 * handled types are selected). Both in the same run, over the same log, on
 * PostgreSQL at TEST_DATABASE_URL.
 *
 *   deno run -A tests/bench/replay_bench.ts [events=20000] [handled share=0.05]
 */
import { applyEvent, rebuildProjection } from "../../src/store/projection_engine.ts";
import { LOCK_APPEND } from "../../src/store/locks.ts";
import { ident, sql } from "../../src/store/sql.ts";
import type { EventStore } from "../../src/store/event_store.ts";
import type { Projection } from "../../src/store/types.ts";
import { counterTotals } from "../fixtures/test_projections.ts";
import { openHarness } from "../support/harness.ts";

const total = Number(Deno.args[0] ?? 20_000);
const share = Number(Deno.args[1] ?? 0.05);

/** The replay loop before projections declared their types: every event read and decoded. */
const rebuildReadingAll = async (store: EventStore, p: Projection): Promise<number> =>
  await store.db.transaction(async (tx) => {
    await tx.query(sql`select pg_advisory_xact_lock(${LOCK_APPEND})`);
    for (const t of p.tables) await tx.query(sql`truncate ${ident(t)}`);
    let position = 0, done = 0;
    for (;;) {
      const batch = await store.readAll(position, 2000, { db: tx, horizon: false });
      if (batch.length === 0) break;
      for (const e of batch) await applyEvent(tx, p, e);
      position = batch.at(-1)!.globalPosition;
      done += batch.length;
    }
    return done;
  });

const h = await openHarness("postgres", { projections: [counterTotals] });
try {
  const every = Math.round(1 / share);
  for (let i = 0; i < total; i += 100) {
    await h.store.append(
      `bulk-${i}`,
      "no_stream",
      Array.from(
        { length: 100 },
        (_, j) =>
          (i + j) % every === 0 ? { type: "CounterIncremented", data: { by: 1 } } : {
            type: "NoteWritten",
            data: { subjectId: `patient-${(i + j) % 50}`, title: "title", text: "x".repeat(200) },
          },
      ),
    );
  }
  const digest = async () =>
    JSON.stringify(await h.db.query(sql`select * from counter_totals order by stream_id`));
  const expected = await digest();
  const time = async (f: () => Promise<unknown>) => {
    const t = performance.now();
    await f();
    return performance.now() - t;
  };
  const rows: string[] = [];
  for (let round = 0; round < 3; round++) {
    const before = await time(() => rebuildReadingAll(h.store, counterTotals));
    if (await digest() !== expected) throw new Error("old replay: rows differ");
    const after = await time(() => rebuildProjection(h.store, counterTotals));
    if (await digest() !== expected) throw new Error("new replay: rows differ");
    rows.push(
      `round ${round + 1}: all types ${before.toFixed(0)} ms, handled types ${
        after.toFixed(0)
      } ms (${(before / after).toFixed(1)}x)`,
    );
  }
  console.log(`${total} events, ${Math.round(total / every)} of the handled type`);
  for (const r of rows) console.log(r);
} finally {
  await h.close();
}
