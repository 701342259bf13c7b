import assert from "node:assert/strict";
import { pgCode } from "../src/store/db.ts";
import { sql, unprepared } from "../src/store/sql.ts";
import { eachDriver } from "./support/harness.ts";

// Dates and JSON pass through the driver port natively, the same way on both
// drivers (issue 11 item 9).

eachDriver("db port: a Date binds as timestamptz, exact to the millisecond", async (h) => {
  await h.db.exec("create table t_dates (id int primary key, at timestamptz not null)");
  const dates = [
    new Date("2026-03-04T05:06:07.089Z"),
    new Date("1969-12-31T23:59:59.999Z"),
    new Date("2099-01-01T00:00:00.001Z"),
    new Date(Date.UTC(2026, 0, 1, 12, 0, 0, 7)),
  ];
  for (const [i, at] of dates.entries()) {
    await h.db.query(sql`insert into t_dates (id, at) values (${i}, ${at})`);
  }
  const rows = await h.db.query<{ at: Date; same: boolean }>(
    sql`select at, at = ${dates[0]!}::timestamptz as same from t_dates order by id`,
  );
  assert.deepEqual(rows.map((r) => r.at.getTime()), dates.map((d) => d.getTime()));
  assert.deepEqual(rows.map((r) => r.same), [true, false, false, false]);
  const [cmp] = await h.db.query<{ before: boolean }>(
    sql`select ${dates[1]!}::timestamptz < ${dates[0]!}::timestamptz as before`,
  );
  assert.equal(cmp!.before, true);
});

eachDriver("db port: objects, arrays and strings bind as jsonb the same way", async (h) => {
  await h.db.exec("create table t_docs (id int primary key, doc jsonb)");
  const docs: unknown[] = [
    { a: { b: [1, "two", { c: null, d: true }] }, e: 'é ✓ "quoted" \\ back' },
    [{ x: 1 }, { x: [2, 3] }],
    ["pwd", "otp"],
    [],
    'a string is a JSON string, never JSON text: {"a":1}',
    { n: 1.5, big: 9007199254740991, neg: -0.25 },
  ];
  for (const [i, doc] of docs.entries()) {
    await h.db.query(sql`insert into t_docs (id, doc) values (${i}, ${doc}::jsonb)`);
  }
  const rows = await h.db.query<{ doc: unknown; kind: string }>(
    sql`select doc, jsonb_typeof(doc) as kind from t_docs order by id`,
  );
  assert.deepEqual(rows.map((r) => r.doc), docs);
  assert.deepEqual(rows.map((r) => r.kind), [
    "object",
    "array",
    "array",
    "array",
    "string",
    "object",
  ]);
  // a jsonb parameter read back through a jsonb function, not only stored
  const [r] = await h.db.query<{ v: string }>(
    sql`select ${{ a: { b: "deep" } }}::jsonb #>> '{a,b}' as v`,
  );
  assert.equal(r!.v, "deep");
});

eachDriver("db port: jsonb refuses a NUL character the same way on both drivers", async (h) => {
  const err = await h.db.query(sql`select ${{ a: "x\u0000y" }}::jsonb as j`).then(
    () => null,
    (e: unknown) => e,
  );
  // jsonb cannot hold U+0000: untranslatable character
  assert.equal(pgCode(err), "22P05");
});

eachDriver(
  "db port: an unprepared query is planned afresh each time (no cached statement)",
  async (h) => {
    // postgres.js keeps a named statement per connection for a prepared
    // query; an unprepared one goes as the unnamed statement and leaves none
    // behind. Both answer alike on both drivers.
    const s = await h.db.reserve();
    try {
      const named = async (marker: string) => {
        const [r] = await s.query<{ n: number }>(sql`select count(*)::int as n
        from pg_prepared_statements where statement like ${`%${marker}%`}
          and statement not like '%pg_prepared_statements%'`);
        return r!.n;
      };
      const [a] = await s.query<{ v: number }>(sql`select ${41}::int + 1 as v -- marker_prepared`);
      const [b] = await s.query<{ v: number }>(
        unprepared(sql`select ${41}::int + 1 as v -- marker_unprepared`),
      );
      assert.equal(a!.v, 42);
      assert.equal(b!.v, 42);
      assert.equal(await named("marker_unprepared"), 0);
      if (h.kind === "postgres") assert.equal(await named("marker_prepared"), 1);
    } finally {
      await s.release();
    }
  },
);
