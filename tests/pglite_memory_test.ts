/**
 * What keeps an idle embedded server small (issue 15, target 7; the figures
 * are tests/bench/memory_bench.ts's, never asserted here): PGlite runs with a
 * 16 MB buffer pool on new and old data directories alike, and a new
 * directory is initialised in a child process (under the `start` task's
 * flags) or on a Worker (without a run permission) that has ended by the
 * time the database is open.
 */
import assert from "node:assert/strict";
import { PGlite } from "@electric-sql/pglite";
import { initOutside, openPglite } from "../src/store/pglite_driver.ts";
import { sql } from "../src/store/sql.ts";
import { startTaskArgs } from "./support/server.ts";

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
    // initdb (in the child process) wrote the setting into the directory's own configuration
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
    // a file where the data directory should be: refused before initdb starts
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

/** The lock file beside `dataDir` is empty and free. */
const assertUnlocked = async (dataDir: string) => {
  assert.equal(await Deno.readTextFile(`${dataDir}.lock`), "");
  const f = await Deno.open(`${dataDir}.lock`, { read: true, write: true });
  try {
    assert.equal(await f.tryLock(true), true);
  } finally {
    f.close();
  }
};

/** Runs tests/support/pglite_init_outside.ts under `flags`; its answer. */
const initUnder = async (flags: string[], dataDir: string): Promise<string> => {
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      ...flags,
      new URL("./support/pglite_init_outside.ts", import.meta.url).pathname,
      dataDir,
    ],
    stdin: "null",
  }).output();
  const text = new TextDecoder().decode(out.stdout).trim();
  assert.equal(out.code, 0, `${text}\n${new TextDecoder().decode(out.stderr)}`);
  return text;
};

Deno.test("pglite memory: the start task initialises in a child process; without a run permission, on a Worker", async () => {
  const dir = await Deno.makeTempDir({ prefix: "chartlog-pglite-mem-" });
  try {
    const taskFlags = (await startTaskArgs()).filter((a) => a.startsWith("--"));
    assert.ok(taskFlags.includes("--allow-run=deno"));
    assert.equal(await initUnder(taskFlags, `${dir}/task`), "child");
    const noRun = taskFlags.filter((f) => !f.startsWith("--allow-run"));
    assert.equal(await initUnder(noRun, `${dir}/norun`), "worker");
    for (const name of ["task", "norun"]) {
      await Deno.stat(`${dir}/${name}/PG_VERSION`);
      await assertUnlocked(`${dir}/${name}`);
    }
    // either way the directory opens with its data and the 16 MB pool
    const db = await openPglite(`${dir}/norun`);
    try {
      assert.equal(await sharedBuffers(db), "16MB");
    } finally {
      await db.close();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("pglite memory: a failing initdb says what failed and where, and releases the lock", async () => {
  const dir = await Deno.makeTempDir({ prefix: "chartlog-pglite-mem-" });
  try {
    // a file where initdb makes its base/ directory
    await Deno.mkdir(`${dir}/pglite`);
    await Deno.writeTextFile(`${dir}/pglite/base`, "not a directory\n");
    await assert.rejects(
      openPglite(`${dir}/pglite`),
      new RegExp(`could not initialise the embedded database in ${dir}/pglite: ENOTDIR`),
    );
    await assertUnlocked(`${dir}/pglite`);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("pglite memory: the initialiser takes the lock itself: one that another process took meanwhile refuses it", async () => {
  const dir = await Deno.makeTempDir({ prefix: "chartlog-pglite-mem-" });
  try {
    // as if a second server took the lock while openPglite handed it over
    const held = await Deno.open(`${dir}/pglite.lock`, { read: true, write: true, create: true });
    try {
      assert.equal(await held.tryLock(true), true);
      await held.write(new TextEncoder().encode("4242\n"));
      await assert.rejects(
        initOutside(`${dir}/pglite`),
        /pglite is in use by another process \(pid 4242\): stop it first/,
      );
      // nothing was written
      await assert.rejects(Deno.stat(`${dir}/pglite/PG_VERSION`), Deno.errors.NotFound);
    } finally {
      held.close();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("pglite memory: a first start killed mid-initdb leaves a directory the next start refuses, not opens", async () => {
  const dir = await Deno.makeTempDir({ prefix: "chartlog-pglite-mem-" });
  const data = `${dir}/pglite`;
  try {
    // the initdb child itself, killed once PostgreSQL has written PG_VERSION (its first file)
    const child = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "--allow-read",
        `--allow-write=${dir}`,
        new URL("../src/store/pglite_init_child.ts", import.meta.url).pathname,
        data,
      ],
      stdin: "null",
      stdout: "null",
      stderr: "null",
    }).spawn();
    let killed = false;
    while (!killed) {
      try {
        await Deno.stat(`${data}/PG_VERSION`);
        child.kill("SIGKILL");
        killed = true;
      } catch {
        if ((await Promise.race([child.status, Promise.resolve(null)])) !== null) break;
        await new Promise((r) => setTimeout(r, 5));
      }
    }
    const status = await child.status;
    assert.ok(killed && !status.success, "the child was killed before it finished");
    await Deno.stat(`${dir}/pglite.initdb`); // the marker stayed

    await assert.rejects(
      openPglite(data),
      new RegExp(`the embedded database in ${data} was never fully initialised`),
    );
    await assertUnlocked(data);
    await Deno.stat(`${data}/PG_VERSION`); // refused, and left as it was: nothing deleted

    // removed as the message says: the next start makes a database
    await Deno.remove(data, { recursive: true });
    const db = await openPglite(data);
    try {
      assert.equal(await sharedBuffers(db), "16MB");
    } finally {
      await db.close();
    }
    await assert.rejects(Deno.stat(`${dir}/pglite.initdb`), Deno.errors.NotFound);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
