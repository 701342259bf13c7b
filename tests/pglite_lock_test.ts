import assert from "node:assert/strict";
import { openPglite } from "../src/store/pglite_driver.ts";

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
