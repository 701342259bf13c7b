import assert from "node:assert/strict";
import { loadConfig } from "../src/config.ts";
import { createLogger } from "../src/logger.ts";
import { BLOB_MARKER, BlobDirError, claimBlobDir } from "../src/media/blob_claim.ts";
import { BlobStore } from "../src/media/blob_store.ts";
import { collectGarbage } from "../src/media/gc.ts";
import { openRuntime } from "../src/runtime.ts";
import { readInstallation } from "../src/store/installation.ts";
import { migrate } from "../src/store/migrations.ts";
import type { PhiCodec } from "../src/store/phi_codec.ts";
import { keyEnv, runCli } from "./support/cli.ts";
import { createTestDatabase, drivers, openHarness, postgresAvailable } from "./support/harness.ts";

/** PostgreSQL when there is one: a database there opens in a fraction of PGlite's time. */
const fastest = async () => (await postgresAvailable()) ? "postgres" as const : "pglite" as const;

const MAIN = new URL("../src/main.ts", import.meta.url).pathname;
const silent = createLogger("silent");
const HOUR = 3_600_000;

/** A blob store over `root` for claim checks (no codec needed: nothing is sealed). */
const storeAt = (root: string) =>
  new BlobStore(root, null as unknown as PhiCodec, new Uint8Array(32));

/** A file where a blob lives (`<root>/<2 hex>/<64 hex>`), aged `ageMs` before `now`. */
const blobFile = async (root: string, now: Date, ageMs: number): Promise<string> => {
  const hex = Array.from(crypto.getRandomValues(new Uint8Array(32)))
    .map((b) => b.toString(16).padStart(2, "0")).join("");
  await Deno.mkdir(`${root}/${hex.slice(0, 2)}`, { recursive: true });
  const path = `${root}/${hex.slice(0, 2)}/${hex}`;
  await Deno.writeFile(path, crypto.getRandomValues(new Uint8Array(64)));
  const t = new Date(now.getTime() - ageMs);
  await Deno.utime(path, t, t);
  return path;
};

const exists = (path: string) => Deno.stat(path).then(() => true, () => false);

Deno.test({
  name:
    "blob dir: two PostgreSQL databases share one; gc and the server of the second refuse it and nothing is deleted",
  ignore: !(await postgresAvailable()),
  fn: async () => {
    const [a, b] = await Promise.all([createTestDatabase(), createTestDatabase()]);
    const blobDir = await Deno.makeTempDir({ prefix: "chartlog_shared_blobs_" });
    const dataDir = await Deno.makeTempDir({ prefix: "chartlog_data_" });
    try {
      const key = crypto.getRandomValues(new Uint8Array(32));
      const env = (url: string) => ({
        DATABASE_URL: url,
        CHARTLOG_BLOB_DIR: blobDir,
        CHARTLOG_DATA_DIR: dataDir,
        CHARTLOG_MASTER_KEY: keyEnv(key),
      });
      // the first database stores a real (encrypted) blob, three hours old
      const ra = await openRuntime(loadConfig(env(a.url)), silent, { workers: false });
      const patientId = crypto.randomUUID();
      const bytes = crypto.getRandomValues(new Uint8Array(4096));
      const sha = Array.from(new Uint8Array(await crypto.subtle.digest("SHA-256", bytes)))
        .map((x) => x.toString(16).padStart(2, "0")).join("");
      const { address } = await ra.blobs.put(patientId, sha, bytes);
      const idA = (await readInstallation(ra.db)).id;
      await ra.close();
      const blobPath = storeAt(blobDir).path(address);
      const old = new Date(Date.now() - 3 * HOUR);
      await Deno.utime(blobPath, old, old);

      // gc on the second database: nothing of its own here, so every file would look orphaned
      for (const args of [["--dry-run"], ["--grace-minutes=0"]]) {
        const out = await runCli("gc.ts", args, env(b.url));
        assert.equal(out.code, 1, out.stdout + out.stderr);
        assert.match(out.stderr, /^gc: refused: CHARTLOG_BLOB_DIR .*another Chartlog installation/);
        assert.doesNotMatch(out.stdout, /remove/);
        assert.ok(await exists(blobPath), `gc ${args} deleted another database's blob`);
      }
      const marker = JSON.parse(await Deno.readTextFile(`${blobDir}/${BLOB_MARKER}`));
      assert.equal(marker.installation, idA);

      // the server on the second database does not start
      const server = await new Deno.Command(Deno.execPath(), {
        args: ["run", "--allow-all", MAIN],
        env: { ...env(b.url), PORT: "0", CHARTLOG_LISTEN_HOST: "127.0.0.1" },
        stdout: "piped",
        stderr: "piped",
      }).output();
      const log = new TextDecoder().decode(server.stdout);
      assert.equal(server.code, 1, log);
      assert.match(log, /CHARTLOG_BLOB_DIR .*belongs to another Chartlog installation/);
      assert.ok(await exists(blobPath));

      // the owner's gc still works on it
      const own = await runCli("gc.ts", ["--dry-run"], env(a.url));
      assert.equal(own.code, 0, own.stderr);
      assert.match(own.stdout, /would remove/); // no media event names this blob
      assert.ok(await exists(blobPath));
    } finally {
      await Promise.all([a.drop(), b.drop()]);
      await Deno.remove(blobDir, { recursive: true });
      await Deno.remove(dataDir, { recursive: true });
    }
  },
});

Deno.test("blob dir: each database has its own random installation id; migrating again keeps it", async (t) => {
  for (const kind of await drivers()) {
    await t.step(kind, async () => {
      const [h, other] = await Promise.all([openHarness(kind), openHarness(await fastest())]);
      try {
        const id = (await readInstallation(h.db)).id;
        assert.match(id, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
        assert.deepEqual(await migrate(h.db), []);
        assert.equal((await readInstallation(h.db)).id, id);
        assert.notEqual((await readInstallation(other.db)).id, id);
      } finally {
        await Promise.all([h.close(), other.close()]);
      }
    });
  }
});

Deno.test("blob dir: an unmarked directory with blobs is adopted on a database's first claim only", async () => {
  const kind = await fastest();
  const [a, b] = await Promise.all([openHarness(kind), openHarness(kind)]);
  const roots = await Promise.all([1, 2, 3].map(() => Deno.makeTempDir({ prefix: "chartlog_b_" })));
  const [legacy, another, empty] = roots as [string, string, string];
  try {
    const now = new Date();
    await blobFile(legacy, now, 3 * HOUR);
    await blobFile(another, now, 3 * HOUR);

    // a deployment from before markers: the first database to claim it adopts it
    const marker = await claimBlobDir(a.db, storeAt(legacy));
    assert.equal(marker.adopted, true);
    assert.equal(marker.installation, (await readInstallation(a.db)).id);
    assert.notEqual((await readInstallation(a.db)).blobDirClaimedAt, null);
    // ... and it is then that database's: the other one is refused
    await assert.rejects(claimBlobDir(b.db, storeAt(legacy)), BlobDirError);
    // a database that already claimed a directory does not adopt an unmarked one full of blobs
    await assert.rejects(
      claimBlobDir(a.db, storeAt(another)),
      (e: Error) =>
        e instanceof BlobDirError && /CHARTLOG_BLOB_DIR .*holds blobs but no/.test(e.message),
    );
    assert.equal(await exists(`${another}/${BLOB_MARKER}`), false);
    // an empty directory is anyone's first: claimed, not adopted
    assert.equal((await claimBlobDir(a.db, storeAt(empty))).adopted, false);
  } finally {
    await Promise.all([a.close(), b.close()]);
    for (const r of roots) await Deno.remove(r, { recursive: true });
  }
});

Deno.test("blob dir: gc never removes unreferenced files older than the directory's adoption", async () => {
  const blobDir = await Deno.makeTempDir({ prefix: "chartlog_legacy_blobs_" });
  const now = new Date();
  const before = await blobFile(blobDir, now, 3 * HOUR); // another database's, maybe
  const pg = (await postgresAvailable()) ? await createTestDatabase() : null;
  const config = loadConfig({
    DATABASE_URL: pg?.url ?? "memory://",
    CHARTLOG_BLOB_DIR: blobDir,
    CHARTLOG_MASTER_KEY: keyEnv(crypto.getRandomValues(new Uint8Array(32))),
  });
  const rt = await openRuntime(config, silent, { workers: false });
  try {
    const marker = JSON.parse(await Deno.readTextFile(`${blobDir}/${BLOB_MARKER}`));
    assert.equal(marker.adopted, true);
    const claimedAt = new Date(marker.claimedAt);
    // an orphan this installation left after the adoption (a failed upload)
    const after = await blobFile(blobDir, claimedAt, -1000);
    const r = await collectGarbage(rt.db, rt.blobs, {
      graceMs: 0,
      now: new Date(claimedAt.getTime() + HOUR),
    });
    assert.deepEqual(r.orphans.map((o) => o.path), [after]);
    assert.equal(r.removed, 1);
    assert.equal(r.predatingAdoption, 1);
    assert.ok(await exists(before));
    assert.equal(await exists(after), false);
  } finally {
    await rt.close();
    await pg?.drop();
    await Deno.remove(blobDir, { recursive: true });
  }
});

Deno.test("blob dir: 20 concurrent claims of one empty directory by two databases: one database wins them all", async () => {
  const kind = await fastest();
  const [a, b] = await Promise.all([openHarness(kind), openHarness(kind)]);
  const root = await Deno.makeTempDir({ prefix: "chartlog_race_" });
  try {
    const ids = [(await readInstallation(a.db)).id, (await readInstallation(b.db)).id];
    const results = await Promise.allSettled(
      Array.from({ length: 20 }, (_, i) => claimBlobDir(i % 2 ? b.db : a.db, storeAt(root))),
    );
    const marker = JSON.parse(await Deno.readTextFile(`${root}/${BLOB_MARKER}`));
    const winner = ids.indexOf(marker.installation);
    assert.ok(winner >= 0);
    results.forEach((r, i) => {
      if (i % 2 === winner) {
        assert.equal(r.status, "fulfilled", String((r as PromiseRejectedResult).reason));
      } else {
        assert.equal(r.status, "rejected");
        assert.ok((r as PromiseRejectedResult).reason instanceof BlobDirError);
      }
    });
    // no temporary marker left behind
    assert.deepEqual((await Array.fromAsync(Deno.readDir(root))).map((e) => e.name), [BLOB_MARKER]);
  } finally {
    await Promise.all([a.close(), b.close()]);
    await Deno.remove(root, { recursive: true });
  }
});
