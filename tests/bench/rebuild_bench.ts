/**
 * A rebuild as it ran before projection tables were versioned (truncate and
 * refill in one transaction holding the append lock) and as it runs now
 * (new tables built beside the old ones, switched in under the append lock
 * for the last events only), both in the same run over the same log on
 * PostgreSQL at TEST_DATABASE_URL. Prints each one's time and the slowest
 * append made while it ran: appends wait for the whole rebuild in place.
 *
 *   deno run -A tests/bench/rebuild_bench.ts [events=20000]
 */
import { applyEvent, handledTypes, rebuildProjection } from "../../src/store/projection_engine.ts";
import { LOCK_APPEND } from "../../src/store/locks.ts";
import { ident, sql } from "../../src/store/sql.ts";
import type { EventStore } from "../../src/store/event_store.ts";
import type { Projection } from "../../src/store/types.ts";
import { counterTotals } from "../fixtures/test_projections.ts";
import { openHarness } from "../support/harness.ts";

const total = Number(Deno.args[0] ?? 20_000);

/** The rebuild before versioned tables: in place, appends held throughout. */
const rebuildInPlace = async (store: EventStore, p: Projection): Promise<number> =>
  await store.db.transaction(async (tx) => {
    await tx.query(sql`select pg_advisory_xact_lock(${LOCK_APPEND})`);
    for (const t of p.tables) await tx.query(sql`truncate ${ident(t)}`);
    let position = 0, done = 0;
    for (;;) {
      const page = await store.follow(position, 2000, {
        db: tx,
        horizon: false,
        types: handledTypes(p),
      });
      for (const e of page.events) await applyEvent(tx, p, e);
      position = page.position;
      done += page.events.length;
      if (page.events.length < 2000) break;
    }
    return done;
  });

const h = await openHarness("postgres", { projections: [counterTotals] });
try {
  for (let i = 0; i < total; i += 100) {
    await h.store.append(
      `counter-${i % 50}`,
      "any",
      Array.from({ length: 100 }, () => ({ type: "CounterIncremented", data: { by: 1 } })),
    );
  }
  const other = await h.openStore({ projections: [counterTotals] });
  /** Runs `rebuild` while appending one event at a time; the time and the slowest append. */
  const measure = async (rebuild: () => Promise<unknown>) => {
    let running = true, slowest = 0, appends = 0;
    const appender = (async () => {
      while (running) {
        const t = performance.now();
        await other.append("counter-live", "any", [{
          type: "CounterIncremented",
          data: { by: 1 },
        }]);
        slowest = Math.max(slowest, performance.now() - t);
        appends++;
      }
    })();
    await new Promise((r) => setTimeout(r, 50));
    const t = performance.now();
    await rebuild();
    const took = performance.now() - t;
    running = false;
    await appender;
    return { took, slowest, appends };
  };
  console.log(`${total} events of the handled type, one appender beside the rebuild`);
  for (let round = 1; round <= 3; round++) {
    const before = await measure(() => rebuildInPlace(h.store, counterTotals));
    const after = await measure(() => rebuildProjection(h.store, counterTotals));
    console.log(
      `round ${round}: in place ${before.took.toFixed(0)} ms (slowest append ${
        before.slowest.toFixed(0)
      } ms, ${before.appends} appends), beside ${after.took.toFixed(0)} ms (slowest append ${
        after.slowest.toFixed(0)
      } ms, ${after.appends} appends): time ${(after.took / before.took).toFixed(2)}x`,
    );
  }
} finally {
  await h.close();
}
