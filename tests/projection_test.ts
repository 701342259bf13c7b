import assert from "node:assert/strict";
import { createLogger } from "../src/logger.ts";
import type { Db } from "../src/store/db.ts";
import {
  projectionStatus,
  ProjectionWorker,
  rebuildProjection,
} from "../src/store/projection_engine.ts";
import { ident, sql } from "../src/store/sql.ts";
import { streamSummary } from "../projections/stream_summary.ts";
import { counterTotals, counterTotalsAsync } from "./fixtures/test_projections.ts";
import { eachDriver } from "./support/harness.ts";
import { keyEnv, runCli } from "./support/cli.ts";

const silent = createLogger("silent");

/** A digest of a table's full contents, independent of physical row order. */
const tableDigest = async (db: Db, table: string): Promise<string> => {
  const [r] = await db.query<{ d: string | null; n: number }>(sql`select
    md5(coalesce(string_agg(t::text, '|' order by t::text), '')) as d, count(*)::int as n
    from ${ident(table)} t`);
  return `${r!.n}:${r!.d}`;
};

const waitFor = async (what: string, check: () => Promise<boolean>) => {
  for (let i = 0; i < 400; i++) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`timed out waiting for ${what}`);
};

const projections = [counterTotals, counterTotalsAsync, streamSummary];

eachDriver(
  "projections: inline rows commit with the append; a refused event appends nothing",
  async (h) => {
    await h.store.append("counter-a", "no_stream", [
      { type: "CounterIncremented", data: { by: 2 } },
      { type: "CounterIncremented", data: { by: 3 } },
    ]);
    assert.deepEqual(
      await h.db.query(sql`select stream_id, total, events from counter_totals`),
      [{ stream_id: "counter-a", total: 5, events: 2 }],
    );
    // concurrent appends share a transaction; the one the projection refuses
    // fails alone and leaves no event and no row behind
    const results = await Promise.allSettled([
      h.store.append("counter-b", "no_stream", [{ type: "CounterIncremented", data: { by: 1 } }]),
      h.store.append("counter-c", "no_stream", [{ type: "CounterIncremented", data: { by: 13 } }]),
      h.store.append("counter-d", "no_stream", [{ type: "CounterIncremented", data: { by: 4 } }]),
    ]);
    assert.deepEqual(results.map((r) => r.status), ["fulfilled", "rejected", "fulfilled"]);
    assert.equal(await h.store.streamVersion("counter-c"), 0);
    assert.deepEqual(
      await h.db.query(sql`select stream_id, total from counter_totals order by stream_id`),
      [
        { stream_id: "counter-a", total: 5 },
        { stream_id: "counter-b", total: 1 },
        { stream_id: "counter-d", total: 4 },
      ],
    );
  },
  { projections },
);

eachDriver(
  "projections: async worker catches up, reports lag, and only one worker is active",
  async (h) => {
    for (let i = 0; i < 30; i++) {
      await h.store.append(`counter-${i % 3}`, "any", [
        { type: "CounterIncremented", data: { by: (i % 5) + 1 } },
      ]);
    }
    const before = await projectionStatus(h.store, projections);
    const lagging = before.find((p) => p.name === "counter_totals_async")!;
    assert.equal(lagging.lag, 30);
    assert.equal(before.find((p) => p.name === "counter_totals")!.lag, 0);

    // two workers, as if two app instances ran (PostgreSQL: two pools)
    const other = await h.openStore({ projections });
    const workers = [
      new ProjectionWorker(h.store, counterTotalsAsync, silent, { pollMs: 20, lockRetryMs: 50 }),
      new ProjectionWorker(other, counterTotalsAsync, silent, { pollMs: 20, lockRetryMs: 50 }),
    ].map((w) => w.start());
    try {
      await waitFor(
        "catch-up",
        async () =>
          (await projectionStatus(h.store, projections)).find((p) =>
            p.name === "counter_totals_async"
          )!.lag === 0,
      );
      for (let i = 30; i < 45; i++) {
        await (i % 2 ? other : h.store).append(`counter-${i % 3}`, "any", [
          { type: "CounterIncremented", data: { by: (i % 5) + 1 } },
        ]);
      }
      await waitFor(
        "second catch-up",
        async () =>
          (await projectionStatus(h.store, projections)).find((p) =>
            p.name === "counter_totals_async"
          )!.lag === 0,
      );
    } finally {
      await Promise.all(workers.map((w) => w.stop()));
    }
    // had both workers folded, every total would be doubled
    const rows = await h.db.query<{ stream_id: string; total: number; events: number }>(
      sql`select stream_id, total, events from counter_totals_async order by stream_id`,
    );
    const inline = await h.db.query(
      sql`select stream_id, total, events from counter_totals order by stream_id`,
    );
    assert.deepEqual(rows, inline);
    assert.equal(
      rows.reduce((n, r) => n + r.events, 0),
      45,
    );
  },
  { projections },
);

eachDriver("projections: rebuild reproduces identical rows", async (h) => {
  for (let i = 0; i < 60; i++) {
    await h.store.append(`counter-${i % 7}`, "any", [
      { type: "CounterIncremented", data: { by: (i % 5) + 1 } },
      { type: "CounterIncremented", data: { by: 1 } },
    ], { actorId: `user-${i % 4}` });
  }
  // sealed payloads too: replay unseals them inside the rebuild's transaction
  // (on PGlite, the only session), which must not wait on itself
  await h.store.append("note-1", "no_stream", [{
    type: "NoteWritten",
    data: { subjectId: "patient-9", title: "t", text: "x" },
  }]);
  const worker = new ProjectionWorker(h.store, streamSummary, silent, { pollMs: 20 }).start();
  await waitFor(
    "stream_summary",
    async () => (await projectionStatus(h.store, [streamSummary]))[0]!.lag === 0,
  );
  await worker.stop();

  const before = {
    inline: await tableDigest(h.db, "counter_totals"),
    summary: await tableDigest(h.db, "stream_summary"),
  };
  assert.ok(before.inline.startsWith("7:"));
  assert.ok(before.summary.startsWith("8:"));
  let progress = 0;
  assert.equal(await rebuildProjection(h.store, counterTotals, (d) => (progress = d)), 121);
  assert.equal(progress, 121);
  assert.equal(await rebuildProjection(h.store, streamSummary), 121);
  assert.deepEqual({
    inline: await tableDigest(h.db, "counter_totals"),
    summary: await tableDigest(h.db, "stream_summary"),
  }, before);

  if (h.kind === "postgres") {
    // and through the CLI, as an operator runs it
    const out = await runCli("rebuild.ts", ["stream_summary"], {
      DATABASE_URL: h.location,
      CHARTLOG_MASTER_KEY: keyEnv(h.masterKey),
    });
    assert.equal(out.code, 0, out.stderr);
    assert.match(out.stdout, /stream_summary v1: rebuilt from 121 events/);
    assert.match(out.stderr, /100% 121\/121/);
    assert.equal(await tableDigest(h.db, "stream_summary"), before.summary);
  }
}, { projections });
