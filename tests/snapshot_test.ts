import assert from "node:assert/strict";
import { readTogether } from "../src/store/snapshot.ts";
import { sql } from "../src/store/sql.ts";
import { eachDriver } from "./support/harness.ts";

type N = { n: number };

/**
 * readTogether: a list's page and its total from one snapshot. A row
 * committed by another connection while the first statement runs is in
 * neither, where two statements on the pool count it in the second only
 * (checked too, on PostgreSQL, so that the test shows what it guards).
 */
eachDriver(
  "snapshot: two reads see one snapshot; a failed one rejects and leaves nothing open",
  async (h) => {
    await h.db.exec("create table snap_rows (id serial primary key, v text not null)");
    await h.db.query(sql`insert into snap_rows (v) values ('a'), ('b')`);
    const slowCount = sql`select count(*)::int as n from snap_rows, pg_sleep(0.3)`;
    const count = sql`select count(*)::int as n from snap_rows`;
    const total = async () => (await h.db.query<N>(count))[0]!.n;
    // another connection's insert commits while the first statement sleeps
    const insertMeanwhile = async () => {
      await new Promise((r) => setTimeout(r, 100));
      await h.db.query(sql`insert into snap_rows (v) values ('late')`);
    };

    const [[a, b]] = await Promise.all([
      readTogether<N, N>(h.db, slowCount, count),
      insertMeanwhile(),
    ]);
    assert.equal(a[0]!.n, 2);
    assert.equal(b[0]!.n, 2, "the second read saw a row the first did not");
    assert.equal(await total(), 3);

    if (h.kind === "postgres") {
      // two statements on the pool, as the lists read before: they disagree
      const twoReads = async () => [await h.db.query<N>(slowCount), await h.db.query<N>(count)];
      const [[x, y]] = await Promise.all([twoReads(), insertMeanwhile()]);
      assert.equal(x![0]!.n, 3);
      assert.equal(y![0]!.n, 4);
    }

    // a failing statement rejects the pair, and the connection goes back clean
    await assert.rejects(readTogether(h.db, sql`select 1 / 0 as n`, count));
    const [rows, [n]] = await readTogether<{ v: string }, N>(
      h.db,
      sql`select v from snap_rows order by id`,
      count,
    );
    assert.equal(n!.n, rows.length);
    assert.equal(rows.length, h.kind === "postgres" ? 4 : 3);
    // nothing is left open on the pool: a write commits and is seen by the next read
    await h.db.query(sql`insert into snap_rows (v) values ('after')`);
    assert.equal(await total(), rows.length + 1);
  },
);
