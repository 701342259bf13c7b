/**
 * What keeps an idle embedded server small (issue 15, target 7; the figures
 * are tests/bench/memory_bench.ts's, never asserted here): PGlite runs with a
 * 16 MB buffer pool on new and old data directories alike, and a new
 * directory is initialised on a Worker that has ended by the time the
 * database is open.
 */
import assert from "node:assert/strict";
import { PGlite } from "@electric-sql/pglite";
import { openPglite } from "../src/store/pglite_driver.ts";
import { sql } from "../src/store/sql.ts";

const sharedBuffers = async (db: Awaited<ReturnType<typeof openPglite>>) =>
  (await db.query<{ v: string }>(sql`select current_setting('shared_buffers') as v`))[0]?.v;

Deno.test("pglite memory: a new directory is initialised with a 16 MB pool, and keeps its data", async () => {
  const dir = await Deno.makeTempDir({ prefix: "chartlog-pglite-mem-" });
  try {
    const db = await openPglite(`${dir}/pglite`);
    try {
      assert.equal(await sharedBuffers(db), "16MB");
      await db.exec("create table kept (n int); insert into kept values (7)");
    } finally {
      await db.close();
    }
    // initdb (on the Worker) wrote the setting into the directory's own configuration
    assert.match(
      await Deno.readTextFile(`${dir}/pglite/postgresql.conf`),
      /^shared_buffers = 16MB/m,
    );
    const again = await openPglite(`${dir}/pglite`);
    try {
      assert.equal(await sharedBuffers(again), "16MB");
      assert.deepEqual(await again.query(sql`select n from kept`), [{ n: 7 }]);
    } finally {
      await again.close();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("pglite memory: a directory made with PGlite's defaults (128 MB) opens with 16 MB", async () => {
  const dir = await Deno.makeTempDir({ prefix: "chartlog-pglite-mem-" });
  try {
    const old = await PGlite.create(`${dir}/pglite`);
    assert.equal(
      (await old.query<{ v: string }>("select current_setting('shared_buffers') as v")).rows[0]?.v,
      "128MB",
    );
    await old.close();
    const db = await openPglite(`${dir}/pglite`);
    try {
      assert.equal(await sharedBuffers(db), "16MB");
    } finally {
      await db.close();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("pglite memory: a data directory that is a file fails the open and releases the lock", async () => {
  const dir = await Deno.makeTempDir({ prefix: "chartlog-pglite-mem-" });
  try {
    // a file where the data directory should be: refused before the Worker starts
    await Deno.writeTextFile(`${dir}/pglite`, "not a directory\n");
    await assert.rejects(openPglite(`${dir}/pglite`));
    // the lock was released: its file is empty and lockable again
    assert.equal(await Deno.readTextFile(`${dir}/pglite.lock`), "");
    const f = await Deno.open(`${dir}/pglite.lock`, { read: true, write: true });
    try {
      assert.equal(await f.tryLock(true), true);
    } finally {
      f.close();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
