import assert from "node:assert/strict";

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
  const start = () =>
    new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "--allow-net",
        "--allow-env",
        "--allow-read",
        "--allow-write",
        "--allow-sys",
        "--allow-ffi", // imagescript's native codecs
        MAIN,
      ],
      cwd: dir,
      clearEnv: true,
      env,
      stdout: "piped",
      stderr: "piped",
    }).spawn();
  try {
    const child = start();
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
    const out = new TextDecoder().decode(await new Response(child.stdout).arrayBuffer());
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
    const again = start();
    await waitForHealth(port, again);
    for (let i = 0; i < 1200; i++) {
      const r = await fetch(`http://127.0.0.1:${port}/ready`);
      await r.body?.cancel();
      if (r.status === 200) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    again.kill("SIGTERM");
    assert.equal((await again.status).code, 0);
    await again.stdout.cancel();
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
