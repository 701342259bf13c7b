import assert from "node:assert/strict";
import { openPglite } from "../src/store/pglite_driver.ts";

Deno.test("pglite: one process per data directory; a stale lock is taken over", async () => {
  const dir = await Deno.makeTempDir({ prefix: "chartlog-lock-" });
  try {
    const db = await openPglite(`${dir}/pglite`);
    assert.equal(await Deno.readTextFile(`${dir}/pglite.lock`), `${Deno.pid}\n`);
    await assert.rejects(openPglite(`${dir}/pglite`), /is in use by process \d+: stop it first/);
    await db.close();
    await assert.rejects(Deno.stat(`${dir}/pglite.lock`), Deno.errors.NotFound);

    // a crashed owner leaves its file behind; its pid is gone
    const dead = new Deno.Command("true").spawn();
    const { success } = await dead.status;
    assert.ok(success);
    await Deno.writeTextFile(`${dir}/pglite.lock`, `${dead.pid}\n`);
    const again = await openPglite(`${dir}/pglite`);
    assert.equal(await Deno.readTextFile(`${dir}/pglite.lock`), `${Deno.pid}\n`);
    await again.close();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
