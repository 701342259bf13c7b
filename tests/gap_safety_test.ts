import assert from "node:assert/strict";
import postgres from "postgres";
import { createLogger } from "../src/logger.ts";
import { eventHash } from "../src/store/hash_chain.ts";
import { projectionStatus, ProjectionWorker } from "../src/store/projection_engine.ts";
import { sql } from "../src/store/sql.ts";
import type { Projection } from "../src/store/types.ts";
import { openHarness, postgresAvailable } from "./support/harness.ts";

/** Records every delivered event, in delivery order, duplicates included. */
const recorder: Projection = {
  name: "gap_recorder",
  version: 1,
  mode: "async",
  tables: ["gap_seen"],
  setup: `create table if not exists gap_seen (
    seq bigint generated always as identity primary key,
    event_id uuid not null, global_position bigint not null)`,
  handlers: {},
  anyEvent: async (db, e) => {
    await db.query(sql`insert into gap_seen (event_id, global_position)
      values (${e.eventId}::uuid, ${e.globalPosition})`);
  },
};

Deno.test({
  name: "gap safety: a follower never skips an event committed late by a slow transaction",
  ignore: !(await postgresAvailable()),
  fn: async () => {
    const h = await openHarness("postgres", { projections: [recorder] });
    const slow = postgres(h.location, { max: 1, onnotice: () => {} });
    const log = createLogger("silent");
    let release: () => void = () => {};
    try {
      // 1. a slow transaction takes its position first and holds its commit
      let inserted!: () => void;
      const insertedP = new Promise<void>((r) => (inserted = r));
      const releaseP = new Promise<void>((r) => (release = r));
      let slowPosition = 0;
      const slowTx = slow.begin(async (tx) => {
        await tx`select pg_current_xact_id()`;
        const recordedAt = new Date();
        const e = {
          streamId: "slow-1",
          streamVersion: 1,
          eventId: crypto.randomUUID(),
          type: "CounterIncremented",
          schemaVersion: 1,
          data: { by: 7 },
          metadata: {},
          recordedAt,
          prevHash: null,
        };
        const [row] = await tx`insert into events (stream_id, stream_version, event_id, type,
            schema_version, data, metadata, recorded_at, prev_hash, hash)
          values (${e.streamId}, 1, ${e.eventId}, ${e.type}, 1, ${tx.json(e.data)},
            ${tx.json(e.metadata)}, ${recordedAt}, null, ${eventHash(e)})
          returning global_position`;
        slowPosition = Number(row!.global_position);
        inserted();
        await releaseP;
      });
      await insertedP;

      // 2. an async follower checkpointing as it goes, and 8 concurrent writers
      const worker = new ProjectionWorker(h.store, recorder, log, { pollMs: 5, batch: 7 }).start();
      const other = await h.openStore();
      const PER_WRITER = 40;
      let acked = 0;
      let sawGap = false;
      const writers = Array.from({ length: 8 }, async (_, w) => {
        for (let v = 0; v < PER_WRITER; v++) {
          await (w % 2 ? other : h.store).append(`counter-w${w}`, v === 0 ? "no_stream" : v, [
            { type: "CounterIncremented", data: { by: 1 } },
          ]);
          acked++;
          if (acked === 160) {
            // higher positions are committed and visible while the lower one is not:
            // a reader that followed positions alone would step over it now
            const [r] = await h.db.query<{ max: string; slow: number }>(sql`select
              max(global_position) as max,
              count(*) filter (where stream_id = 'slow-1')::int as slow from events`);
            sawGap = Number(r!.max) > slowPosition && r!.slow === 0;
            release();
          }
        }
      });
      await Promise.all(writers);
      await slowTx;
      assert.ok(sawGap, "the scenario must produce a late commit below committed positions");

      for (let i = 0; i < 400; i++) {
        const [s] = await projectionStatus(h.store, [recorder]);
        if (s!.lag === 0) break;
        await new Promise((r) => setTimeout(r, 25));
      }
      await worker.stop();

      const seen = await h.db.query<{ event_id: string; global_position: string }>(
        sql`select event_id::text as event_id, global_position from gap_seen order by seq`,
      );
      const all = await h.db.query<{ event_id: string; global_position: string }>(
        sql`select event_id::text as event_id, global_position from events order by global_position`,
      );
      assert.equal(all.length, 8 * PER_WRITER + 1);
      // every committed event exactly once, in global order
      assert.deepEqual(seen, all);
      assert.equal(Number(seen[0]!.global_position), slowPosition);
    } finally {
      release();
      await slow.end();
      await h.close();
    }
  },
});
