/**
 * A projection's tables belong to its version: a new version is built beside
 * the tables in use, which keep serving while it catches up, and switched in
 * when it has; a rebuild does the same beside a running server and its
 * async worker.
 */
import assert from "node:assert/strict";
import postgres from "postgres";
import type { Db } from "../src/store/db.ts";
import { buildProjection, buildSchema, rebuildProjection } from "../src/store/projection_engine.ts";
import { ident, sql } from "../src/store/sql.ts";
import type { Projection } from "../src/store/types.ts";
import { counterTotals } from "./fixtures/test_projections.ts";
import { keyEnv, runCli } from "./support/cli.ts";
import { createTestDatabase, eachDriver, postgresAvailable } from "./support/harness.ts";
import { startServer, waitForStatus } from "./support/server.ts";

/** A digest of a table's full contents, independent of physical row order. */
const tableDigest = async (db: Db, table: string): Promise<string> => {
  const [r] = await db.query<{ d: string | null; n: number }>(sql`select
    md5(coalesce(string_agg(t::text, '|' order by t::text), '')) as d, count(*)::int as n
    from ${ident(table)} t`);
  return `${r!.n}:${r!.d}`;
};

/**
 * Version 2 of the counter totals: a new column, which version 1's table
 * does not have (`create table if not exists` would have kept the old shape).
 * Generated, so version 1's handler, still running in an older instance
 * while version 2 is built, writes rows version 2 agrees with.
 */
const counterTotalsV2: Projection = {
  ...counterTotals,
  version: 2,
  setup: `create table counter_totals (
    stream_id text primary key, total integer not null, events integer not null,
    doubled integer generated always as (total * 2) stored)`,
};

eachDriver(
  "projection versions: a new version is built beside the old tables, which keep serving, then switched in",
  async (h) => {
    // more than two replay batches (2000), so the catch-up takes several transactions
    for (let i = 0; i < 50; i++) {
      await h.store.append(
        `counter-${i % 10}`,
        "any",
        Array.from({ length: 100 }, (_, j) => ({
          type: "CounterIncremented",
          data: { by: (j % 5) + 1 },
        })),
      );
    }
    // start-up of an instance with version 2, while this one (version 1) serves and writes
    let building = true;
    const starting = h.openStore({ projections: [counterTotalsV2] })
      .finally(() => (building = false));
    const shapes: string[] = [];
    let appended = 0;
    while (building) {
      const [row] = await h.db.query<Record<string, unknown>>(
        sql`select * from counter_totals order by stream_id limit 1`,
      );
      shapes.push(Object.keys(row!).sort().join(","));
      await h.store.append("counter-live", "any", [{
        type: "CounterIncremented",
        data: { by: 1 },
      }]);
      appended++;
    }
    await starting;
    // reads were answered from version 1's table during the catch-up
    assert.ok(shapes.includes("events,stream_id,total"), shapes.join(" "));
    const [row] = await h.db.query<Record<string, unknown>>(
      sql`select * from counter_totals where stream_id = 'counter-live'`,
    );
    // version 2's table is in place, and holds every event written meanwhile
    assert.deepEqual(row, {
      stream_id: "counter-live",
      total: appended,
      events: appended,
      doubled: 2 * appended,
    });
    const [n] = await h.db.query<{ sum: number; count: number }>(sql`select
      (select sum(events)::int from counter_totals) as sum, (select count(*)::int from events) as count`);
    assert.equal(n!.sum, n!.count);
    const [state] = await h.db.query<{ version: number; tables: string[] }>(
      sql`select version, tables from projection_state where name = 'counter_totals'`,
    );
    assert.deepEqual(state, { version: 2, tables: ["counter_totals"] });
    const [left] = await h.db.query<{ n: number }>(sql`select count(*)::int as n
      from information_schema.schemata where schema_name = ${buildSchema(counterTotals)}`);
    assert.equal(left!.n, 0, "no build schema is left behind");

    // the rows end equal to a fresh rebuild's
    const switched = await tableDigest(h.db, "counter_totals");
    assert.equal(await rebuildProjection(h.store, counterTotalsV2), n!.count);
    assert.equal(await tableDigest(h.db, "counter_totals"), switched);

    // a restart at the same version builds nothing (the rows are not rewritten)
    await h.db.query(sql`update counter_totals set total = -1 where stream_id = 'counter-live'`);
    await h.openStore({ projections: [counterTotalsV2] });
    const [kept] = await h.db.query<{ total: number }>(
      sql`select total from counter_totals where stream_id = 'counter-live'`,
    );
    assert.equal(kept!.total, -1);
  },
  { projections: [counterTotals] },
);

eachDriver(
  "projection versions: a setup that makes other tables than it declares is refused, and nothing is switched",
  async (h) => {
    await h.store.append("counter-a", "no_stream", [{
      type: "CounterIncremented",
      data: { by: 2 },
    }]);
    const bad: Projection = {
      ...counterTotals,
      version: 2,
      setup: `${counterTotalsV2.setup}; create table counter_extra (id int)`,
    };
    await assert.rejects(
      () => rebuildProjection(h.store, bad),
      /makes tables \[counter_extra,counter_totals\] but it declares \[counter_totals\]/,
    );
    const [row] = await h.db.query<Record<string, unknown>>(sql`select * from counter_totals`);
    assert.deepEqual(row, { stream_id: "counter-a", total: 2, events: 1 });
    const [state] = await h.db.query<{ version: number }>(
      sql`select version from projection_state where name = 'counter_totals'`,
    );
    assert.equal(state!.version, 1);
  },
  { projections: [counterTotals] },
);

eachDriver(
  "projection versions: 20 concurrent start-ups of a new version build it once; concurrent rebuilds take turns",
  async (h) => {
    for (let i = 0; i < 30; i++) {
      await h.store.append(`counter-${i % 3}`, "any", [{
        type: "CounterIncremented",
        data: { by: 1 },
      }]);
    }
    const expected = [
      { stream_id: "counter-0", total: 10, events: 10, doubled: 20 },
      { stream_id: "counter-1", total: 10, events: 10, doubled: 20 },
      { stream_id: "counter-2", total: 10, events: 10, doubled: 20 },
    ];
    const folded = await Promise.all(
      Array.from(
        { length: 20 },
        () => buildProjection(h.store, counterTotalsV2, { onlyIfStale: true }),
      ),
    );
    assert.deepEqual(folded.filter((n) => n > 0), [30]);
    const rows = () => h.db.query(sql`select * from counter_totals order by stream_id`);
    assert.deepEqual(await rows(), expected);
    const rebuilt = await Promise.all(
      Array.from({ length: 5 }, () => rebuildProjection(h.store, counterTotalsV2)),
    );
    assert.deepEqual(rebuilt, [30, 30, 30, 30, 30]);
    assert.deepEqual(await rows(), expected);
  },
  { projections: [counterTotals] },
);

Deno.test("projection versions: `deno task rebuild` runs beside a server that is writing, its worker included", async () => {
  if (!(await postgresAvailable())) return;
  const tdb = await createTestDatabase();
  const dir = await Deno.makeTempDir({ prefix: "chartlog-rebuild-" });
  const key = keyEnv(crypto.getRandomValues(new Uint8Array(32)));
  const pg = postgres(tdb.url, { max: 1, onnotice: () => {} });
  const server = await startServer({
    DATABASE_URL: tdb.url,
    CHARTLOG_MASTER_KEY: key,
    CHARTLOG_DATA_DIR: `${dir}/data`,
    CHARTLOG_MFA_REQUIRED_ROLES: "none",
    CHARTLOG_LOGIN_RATE_PER_MIN: "1000000",
    CHARTLOG_ENV: "test", // cheap password hashing: more writes
    LOG_LEVEL: "info",
  }, dir);
  try {
    await waitForStatus(server, "/ready", 200);
    // writes: failed logins, each one event (folded by the async stream summary)
    let writing = true, acknowledged = 0;
    const writer = async () => {
      while (writing) {
        const res = await fetch(`${server.url}/v1/auth/login`, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({ email: `nobody-${crypto.randomUUID()}@x.test`, password: "x" }),
        });
        await res.body?.cancel();
        if (res.status !== 401) {
          const errors = server.stdout.filter((l) => /"level":(50|60)/.test(l)).slice(-3);
          throw new Error(`a write answered ${res.status}:\n${errors.join("\n")}`);
        }
        acknowledged++;
      }
    };
    const writers = [writer(), writer()];
    const env = { DATABASE_URL: tdb.url, CHARTLOG_MASTER_KEY: key };
    try {
      // the worker holds its lock for its whole life: the rebuild must not wait for it
      while (acknowledged < 20) await new Promise((r) => setTimeout(r, 20));
      const before = acknowledged;
      for (const args of [["stream_summary"], ["--all"], ["users"]]) {
        const out = await runCli("rebuild.ts", args, env);
        assert.equal(out.code, 0, out.stderr);
        assert.match(out.stdout, /v\d+: rebuilt from [1-9]\d* events/);
      }
      assert.ok(acknowledged > before, "the server kept writing meanwhile");
    } finally {
      writing = false;
      await Promise.all(writers);
    }
    // the worker goes on from the rebuilt checkpoint: every event folded once
    const caughtUp = async () => {
      const [r] = await pg`select (select position from projection_state
          where name = 'stream_summary') = (select max(global_position) from events) as ok`;
      return r!.ok as boolean;
    };
    for (let i = 0; i < 600 && !(await caughtUp()); i++) {
      await new Promise((r) => setTimeout(r, 50));
    }
    assert.ok(await caughtUp(), "the worker caught up");
    const [c] = await pg`select (select sum(event_count)::int from stream_summary) as folded,
      (select count(*)::int from events) as logged,
      (select count(*)::int from events where type = 'LoginFailed') as failed`;
    assert.equal(c!.folded, c!.logged);
    assert.ok(c!.failed >= acknowledged);
    const digest = async () => {
      const [d] = await pg`select md5(string_agg(t::text, '|' order by t::text)) as d
        from stream_summary t`;
      return d!.d as string;
    };
    const live = await digest();
    const out = await runCli("rebuild.ts", ["stream_summary"], env);
    assert.equal(out.code, 0, out.stderr);
    assert.equal(await digest(), live, "equal to a fresh rebuild's rows");
    // a rebuild as a superuser hands its tables to the app as it switches
    // them in: left to the next migration, that handover deadlocked with
    // logins joining users and user_credentials
    const owners = await pg`select tablename::text as t, tableowner::text as o from pg_tables
      where schemaname = 'public' and tablename in ('users', 'user_credentials', 'stream_summary')
      order by 1`;
    assert.deepEqual(owners.map((r) => `${r.t}:${r.o}`), [
      "stream_summary:chartlog_app",
      "user_credentials:chartlog_app",
      "users:chartlog_app",
    ]);
    assert.ok(!server.exited);
    assert.ok(
      !server.stdout.some((l) => /projection worker failed/.test(l)),
      server.stdout.join("\n"),
    );
  } finally {
    await server.kill();
    await pg.end();
    await tdb.drop();
    await Deno.remove(dir, { recursive: true });
  }
});
