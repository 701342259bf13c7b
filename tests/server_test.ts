import assert from "node:assert/strict";
import { projections } from "../projections/index.ts";
import { streamSummary } from "../projections/stream_summary.ts";
import { GRANT_SWEEPER_LOCK, projectionLockName } from "../src/store/locks.ts";
import { openPostgres } from "../src/store/postgres_driver.ts";
import { projectionStatus } from "../src/store/projection_engine.ts";
import { sql } from "../src/store/sql.ts";
import { openTestApp, TEST_CHECKPOINT_KEY } from "./support/app.ts";
import { createTestDatabase, postgresAvailable } from "./support/harness.ts";
import {
  freePort,
  parseLine,
  type ServerProcess,
  startServer,
  startTaskArgs,
} from "./support/server.ts";
import { createUser } from "./support/users.ts";

const MAIN = new URL("../src/main.ts", import.meta.url).pathname;

const portFree = (port: number): boolean => {
  try {
    Deno.listen({ port, hostname: "127.0.0.1" }).close();
    return true;
  } catch {
    return false;
  }
};

const waitForHealth = async (port: number, child: Deno.ChildProcess): Promise<number> => {
  const started = performance.now();
  let exited = false;
  child.status.then(() => (exited = true));
  for (let i = 0; i < 1200 && !exited; i++) {
    try {
      const res = await fetch(`http://127.0.0.1:${port}/health`);
      const body = await res.json();
      if (res.status === 200 && body.status === "ok") return performance.now() - started;
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error("server never answered /health");
};

Deno.test("server: with no environment in an empty directory it serves /health on PGlite, and stops cleanly on SIGTERM", async () => {
  const dir = await Deno.makeTempDir({ prefix: "chartlog-empty-" });
  // "no environment at all": only what Deno itself needs to find its cache
  const env: Record<string, string> = {};
  for (const k of ["HOME", "PATH", "DENO_DIR"]) {
    const v = Deno.env.get(k);
    if (v) env[k] = v;
  }
  const port = portFree(8080) ? 8080 : 18_000 + Math.floor(Math.random() * 1000);
  if (port !== 8080) env.PORT = String(port); // something else holds the default port here
  // the `start` task's flags; stdout is read as it comes: the request lines of a slow first
  // start would fill the pipe, and a server blocked writing them never becomes ready
  const args = await startTaskArgs();
  const start = () => {
    const child = new Deno.Command(Deno.execPath(), {
      args,
      cwd: dir,
      clearEnv: true,
      env,
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    return { child, stdout: new Response(child.stdout).text() };
  };
  try {
    const { child, stdout } = start();
    const ms = await waitForHealth(port, child);
    console.log(`first start on an empty directory: /health 200 after ${Math.round(ms)} ms`);
    // readiness follows once the embedded database is created and migrated
    for (let i = 0; i < 1200; i++) {
      const r = await fetch(`http://127.0.0.1:${port}/ready`);
      await r.body?.cancel();
      if (r.status === 200) break;
      assert.equal(r.status, 503);
      await new Promise((r) => setTimeout(r, 50));
    }
    const ready = await (await fetch(`http://127.0.0.1:${port}/ready`)).json();
    assert.equal(ready.database, "pglite");
    const key = await Deno.readTextFile(`${dir}/data/master.key`);
    assert.ok((await Deno.stat(`${dir}/data/pglite`)).isDirectory);

    child.kill("SIGTERM");
    const status = await child.status;
    const out = await stdout;
    await child.stderr.cancel();
    assert.equal(status.code, 0);
    const lines = out.trim().split("\n").map((l) => JSON.parse(l));
    assert.ok(
      lines.some((l) =>
        l.msg === "generated a development master key; set CHARTLOG_MASTER_KEY in production"
      ),
    );
    assert.equal(lines.at(-1).msg, "stopped");

    // a second start reuses the data directory and the generated key
    const { child: again, stdout: againOut } = start();
    await waitForHealth(port, again);
    for (let i = 0; i < 1200; i++) {
      const r = await fetch(`http://127.0.0.1:${port}/ready`);
      await r.body?.cancel();
      if (r.status === 200) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    again.kill("SIGTERM");
    assert.equal((await again.status).code, 0);
    await againOut;
    await again.stderr.cancel();
    assert.equal(await Deno.readTextFile(`${dir}/data/master.key`), key);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("server: a bad variable stops start-up with a message naming it", async () => {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-all", MAIN],
    env: { PORT: "not-a-port", CHARTLOG_ENV: "production" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.equal(out.code, 1);
  const err = new TextDecoder().decode(out.stderr);
  assert.match(err, /PORT/);
  assert.match(err, /CHARTLOG_MASTER_KEY: is required when CHARTLOG_ENV=production/);
});

/** Inodes of the TCP sockets in LISTEN state (IPv4 and IPv6) in this network namespace. */
const listeningInodes = async (): Promise<Set<string>> => {
  const inodes = new Set<string>();
  for (const f of ["/proc/net/tcp", "/proc/net/tcp6"]) {
    const text = await Deno.readTextFile(f).catch(() => "");
    for (const line of text.trim().split("\n").slice(1)) {
      const cols = line.trim().split(/\s+/);
      if (cols[3] === "0A") inodes.add(cols[9]!); // st 0A: LISTEN
    }
  }
  return inodes;
};

/** The socket inodes a process holds open. */
const socketInodes = async (pid: number): Promise<string[]> => {
  const out: string[] = [];
  for await (const fd of Deno.readDir(`/proc/${pid}/fd`)) {
    const target = await Deno.readLink(`/proc/${pid}/fd/${fd.name}`).catch(() => "");
    const m = /^socket:\[(\d+)\]$/.exec(target);
    if (m) out.push(m[1]!);
  }
  return out;
};

const pgUp = await postgresAvailable();

Deno.test({
  name: "server: CHARTLOG_HTTP=off listens on no port, runs the workers, and stops on SIGTERM",
  ignore: !pgUp || Deno.build.os !== "linux",
  fn: async () => {
    const pg = await createTestDatabase({ app: true });
    const dataDir = await Deno.makeTempDir({ prefix: "chartlog-workers-" });
    const masterKey = btoa(String.fromCharCode(...crypto.getRandomValues(new Uint8Array(32))));
    const port = freePort();
    const env = {
      DATABASE_URL: pg.url,
      CHARTLOG_MASTER_KEY: masterKey,
      CHARTLOG_CHECKPOINT_KEY: TEST_CHECKPOINT_KEY,
      CHARTLOG_DATA_DIR: dataDir,
      CHARTLOG_HTTP: "off",
      PORT: String(port),
      LOG_LEVEL: "info",
    };
    const db = openPostgres(pg.url, { max: 1 });
    let server: ServerProcess | null = null;
    // whether some other session holds the advisory lock (taking it here would succeed otherwise)
    const heldElsewhere = async (name: string) => {
      const [r] = await db.query<{ ok: boolean }>(
        sql`select pg_try_advisory_lock(hashtext(${name})) as ok`,
      );
      if (r!.ok) await db.query(sql`select pg_advisory_unlock(hashtext(${name}))`);
      return !r!.ok;
    };
    const async = projections.filter((p) => p.mode === "async");
    try {
      server = await startServer(env, dataDir);
      const running = await server.waitForLog((l) => l.msg === "workers running");
      const announced = parseLine(server.stdout[running]!)!;
      assert.deepEqual(
        [...(announced.projections as string[])].sort(),
        async.map((p) => p.name).sort(),
      );
      assert.equal(announced.sweeper, true);
      assert.equal(announced.publisher, true);
      assert.ok(server.stdout.some((l) => parseLine(l)?.http === "off"));

      // events appended elsewhere (as a server would) are folded by this instance's workers
      const t = await openTestApp({ DATABASE_URL: pg.url, CHARTLOG_MASTER_KEY: masterKey });
      try {
        await createUser(t.runtime, "practitioner");
        for (let i = 0;; i++) {
          const [s] = await projectionStatus(t.runtime.store, [streamSummary]);
          if (s!.lag === 0) break;
          assert.ok(i < 1200, "stream_summary never caught up");
          await new Promise((r) => setTimeout(r, 50));
        }
        const [row] = await t.runtime.db.query<{ n: number }>(
          sql`select count(*)::int as n from stream_summary where category = 'user'`,
        );
        assert.equal(row!.n, 1);
      } finally {
        await t.close();
      }
      for (const p of async) {
        assert.ok(await heldElsewhere(projectionLockName(p.name)), p.name);
      }
      assert.ok(await heldElsewhere(GRANT_SWEEPER_LOCK));

      // no listener: nothing on PORT, and no socket of the process is a listening one
      await assert.rejects(
        Deno.connect({ hostname: "127.0.0.1", port }),
        Deno.errors.ConnectionRefused,
      );
      const listening = await listeningInodes();
      const mine = await socketInodes(server.child.pid);
      assert.ok(mine.length > 0, "the process holds its database connections");
      assert.deepEqual(mine.filter((i) => listening.has(i)), []);

      server.child.kill("SIGTERM");
      const status = await server.status;
      assert.equal(status.code, 0, server.stderr.join("\n"));
      await server.kill(); // drains its output
      assert.equal(parseLine(server.stdout.at(-1)!)?.msg, "stopped");
      // its locks went with it
      for (const p of async) assert.equal(await heldElsewhere(projectionLockName(p.name)), false);
    } finally {
      await server?.kill();
      await db.close();
      await Deno.remove(dataDir, { recursive: true });
      await pg.drop();
    }
  },
});
