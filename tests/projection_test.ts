import assert from "node:assert/strict";
import { createLogger } from "../src/logger.ts";
import type { Db } from "../src/store/db.ts";
import type { Projection } from "../src/store/types.ts";
import {
  buildProjection,
  projectionStatus,
  ProjectionWorker,
  rebuildProjection,
  setupProjections,
} from "../src/store/projection_engine.ts";
import { ident, sql } from "../src/store/sql.ts";
import { streamSummary } from "../projections/stream_summary.ts";
import { counterTotals, counterTotalsAsync } from "./fixtures/test_projections.ts";
import { eachDriver } from "./support/harness.ts";
import { keyEnv, runCli } from "./support/cli.ts";
import { type GivenEvent, givenEventsThenRows } from "./support/projection.ts";

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
  // counter_totals folds only its own type: the note is skipped, not counted
  assert.equal(await rebuildProjection(h.store, counterTotals, (d) => (progress = d)), 120);
  assert.equal(progress, 120);
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

/**
 * Write-only with a `foldBatch` (as the patients projection): on PostgreSQL its
 * build reads the next page while this one's statements are sent, unawaited.
 * `refuse` makes a page holding a `by` of 13 fail in the database, at COMMIT's turn.
 */
const pagedTotals = (refuse: boolean, version = 1): Projection => ({
  name: "paged_totals",
  version,
  mode: "async",
  writeOnly: true,
  tables: ["paged_totals"],
  setup: `create table paged_totals (stream_id text primary key, total integer not null)`,
  handlers: {
    CounterIncremented: async (db, e) => {
      await pagedTotals(refuse).foldBatch!(db, [e]);
    },
  },
  foldBatch: async (db, events) => {
    for (const e of events) {
      const by = e.data.by as number;
      await db.query(sql`insert into paged_totals (stream_id, total)
        values (${e.streamId}, ${refuse && by === 13 ? sql`1 / 0` : sql`${by}::integer`})
        on conflict (stream_id) do update set total = paged_totals.total + excluded.total`);
    }
  },
});

eachDriver(
  "projections: a build whose page fails in the database stops there, the tables in use stay, and the next build completes",
  async (h) => {
    for (let i = 0; i < 20; i++) {
      await h.store.append(`counter-${i % 3}`, "any", [{
        type: "CounterIncremented",
        data: { by: i === 14 ? 13 : 1 },
      }]);
    }
    const totals = async () =>
      (await h.db.query<{ stream_id: string; total: number }>(
        sql`select stream_id, total from paged_totals order by stream_id`,
      )).map((r) => `${r.stream_id}=${r.total}`).join(",");
    // version 1 folds every page
    assert.equal(await buildProjection(h.store, pagedTotals(false), { pageSize: 3 }), 20);
    const built = await totals();
    assert.equal(built, "counter-0=7,counter-1=7,counter-2=18");
    // version 2 fails on the page holding the 13 (the fifth of seven)
    await assert.rejects(
      buildProjection(h.store, pagedTotals(true, 2), { pageSize: 3 }),
      (err: Error & { code?: string }) => err.code === "22012", // division_by_zero
    );
    assert.equal(await totals(), built, "the tables in use are untouched");
    const [state] = await h.db.query<{ version: number }>(
      sql`select version from projection_state where name = 'paged_totals'`,
    );
    assert.equal(Number(state!.version), 1);
    // the build's connection went back clean: a new build completes
    assert.equal(await buildProjection(h.store, pagedTotals(false, 2), { pageSize: 3 }), 20);
    assert.equal(await totals(), built);
    const [after] = await h.db.query<{ version: number }>(
      sql`select version from projection_state where name = 'paged_totals'`,
    );
    assert.equal(Number(after!.version), 2);
  },
);

/** A log where most events are of types the counter projections do not handle. */
const mostlyOtherTypes = (counters: number): GivenEvent[] =>
  Array.from(
    { length: counters * 4 },
    (_, i): GivenEvent =>
      i % 4 === 0
        ? { stream: `counter-${i % 3}`, type: "CounterIncremented", data: { by: (i % 5) + 1 } }
        : i % 4 === 1
        ? { stream: `thing-${i}`, type: "ThingNamed", data: { first: "a", last: "b" } }
        : {
          stream: `note-${i % 7}`,
          type: "NoteWritten",
          data: { subjectId: "subject-1", title: "t", text: "PHI" },
        },
  );

/**
 * An event no projection here handles and that cannot be unsealed (its
 * ciphertext is not one): a replay that decoded it would fail.
 */
const appendUnreadable = async (h: { db: Db }) => {
  await h.db.query(sql`insert into events (stream_id, stream_version, event_id, type,
      schema_version, data, metadata, recorded_at, hash)
    values ('note-unreadable', 1, gen_random_uuid(), 'NoteWritten', 1,
      ${
    JSON.stringify({
      subjectId: "subject-1",
      title: { $sealed: { s: "subject-1", c: "A".repeat(40) } },
      text: "x",
    })
  }::text::jsonb, '{}'::jsonb, now(), 'h')`);
};

eachDriver(
  "projections: given events, then rows: a rebuild reads only the types the projection handles",
  async (h) => {
    const given = mostlyOtherTypes(6);
    // the data key of subject-1 exists, so a decode of the row below would be attempted
    await h.store.append(given[2]!.stream, "any", [{ type: given[2]!.type, data: given[2]!.data }]);
    await appendUnreadable(h);
    const rows = await givenEventsThenRows(
      h,
      counterTotals,
      given,
      sql`select stream_id, total, events from counter_totals order by stream_id`,
    );
    assert.deepEqual(rows, [
      { stream_id: "counter-0", total: 1 + 3, events: 2 },
      { stream_id: "counter-1", total: 5 + 2, events: 2 },
      { stream_id: "counter-2", total: 4 + 1, events: 2 },
    ]);
    // the checkpoint is past every skipped event: the head of the log
    const [s] = await h.db.query<{ position: string }>(
      sql`select position from projection_state where name = 'counter_totals'`,
    );
    assert.equal(Number(s!.position), await h.store.headPosition());
  },
);

eachDriver(
  "projections: the async worker skips other types and its checkpoint reaches the head",
  async (h) => {
    const given = mostlyOtherTypes(6);
    await h.store.append(given[2]!.stream, "any", [{ type: given[2]!.type, data: given[2]!.data }]);
    await appendUnreadable(h);
    for (const e of given) await h.store.append(e.stream, "any", [{ type: e.type, data: e.data }]);
    // trailing events of other types: the checkpoint must still move past them
    for (let i = 0; i < 5; i++) {
      await h.store.append("thing-tail", "any", [{
        type: "ThingNamed",
        data: { first: "a", last: "b" },
      }]);
    }
    await setupProjections(h.store, [counterTotalsAsync]);
    const worker = new ProjectionWorker(h.store, counterTotalsAsync, silent, {
      pollMs: 20,
      batch: 2,
    }).start();
    try {
      await waitFor(
        "catch-up",
        async () => (await projectionStatus(h.store, [counterTotalsAsync]))[0]!.lag === 0,
      );
    } finally {
      await worker.stop();
    }
    const [status] = await projectionStatus(h.store, [counterTotalsAsync]);
    assert.equal(status!.lastError, null);
    assert.deepEqual(
      await h.db.query(
        sql`select stream_id, total, events from counter_totals_async order by stream_id`,
      ),
      [
        { stream_id: "counter-0", total: 4, events: 2 },
        { stream_id: "counter-1", total: 7, events: 2 },
        { stream_id: "counter-2", total: 5, events: 2 },
      ],
    );
  },
);
