import assert from "node:assert/strict";
import { openPglite } from "../src/store/pglite_driver.ts";
import {
  denoNotice,
  parseLine,
  type ServerProcess,
  startServer,
  waitForStatus,
} from "./support/server.ts";

Deno.test("pglite: one process per data directory; closing releases the lock", async () => {
  const dir = await Deno.makeTempDir({ prefix: "chartlog-lock-" });
  try {
    const db = await openPglite(`${dir}/pglite`);
    assert.equal(await Deno.readTextFile(`${dir}/pglite.lock`), `${Deno.pid}\n`);
    await assert.rejects(
      openPglite(`${dir}/pglite`),
      new RegExp(`is in use by another process \\(pid ${Deno.pid}\\): stop it first`),
    );
    await db.close();
    // the file stays (deleting it would race a concurrent opener) but is emptied and unlocked
    assert.equal(await Deno.readTextFile(`${dir}/pglite.lock`), "");

    // a pid left in the file says nothing: only the OS lock counts
    await Deno.writeTextFile(`${dir}/pglite.lock`, "1\n");
    const again = await openPglite(`${dir}/pglite`);
    assert.equal(await Deno.readTextFile(`${dir}/pglite.lock`), `${Deno.pid}\n`);
    await again.close();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("pglite: under `deno task start`, a second server is refused and a server killed with -9 is replaced", async () => {
  const dir = await Deno.makeTempDir({ prefix: "chartlog-takeover-" });
  const env = {
    CHARTLOG_MASTER_KEY: btoa(String.fromCharCode(...crypto.getRandomValues(new Uint8Array(32)))),
  };
  const servers: ServerProcess[] = [];
  const start = async (port?: number) => {
    const s = await startServer(port ? { ...env, PORT: String(port) } : env, dir);
    servers.push(s);
    return s;
  };
  try {
    const first = await start();
    await waitForStatus(first, "/ready", 200);

    // a second server on the same directory stops with a message that says why
    const second = await start();
    assert.equal((await second.status).code, 1);
    await second.kill();
    const fatal = second.stdout.map(parseLine).find((l) =>
      l?.msg === "cannot start: the database or the blob directory was refused"
    );
    assert.match(
      String((fatal?.err as { message?: string })?.message),
      new RegExp(`data/pglite is in use by another process \\(pid ${first.child.pid}\\)`),
    );
    assert.equal(first.exited, false);

    // kill -9: the lock goes with the process, and a new server starts at once
    first.child.kill("SIGKILL");
    await first.kill();
    const third = await start(first.port);
    await waitForStatus(third, "/ready", 200);
    // a chunked JSON body, which once made Deno print a non-JSON warning about request.signal
    const res = await fetch(`${third.url}/v1/auth/login`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: ReadableStream.from([new TextEncoder().encode('{"email":"a@b.test","password":"x"}')]),
    });
    assert.equal(res.status, 401);
    await res.body?.cancel();
    third.child.kill("SIGTERM");
    assert.equal((await third.status).code, 0);
    await third.kill();
    // every line the server wrote is JSON
    for (const s of [first, third]) {
      assert.deepEqual(s.stdout.filter((l) => l.trim() !== "" && !parseLine(l)), []);
      assert.deepEqual(s.stderr.filter((l) => !denoNotice(l) && !parseLine(l)), []);
    }
  } finally {
    for (const s of servers) await s.kill();
    await Deno.remove(dir, { recursive: true });
  }
});
