import assert from "node:assert/strict";
import { openPglite } from "../src/store/pglite_driver.ts";
import { sql } from "../src/store/sql.ts";
import { verifyChain } from "../src/store/verify_chain.ts";
import { keyEnv, runCli } from "./support/cli.ts";
import { drivers, openHarness } from "./support/harness.ts";

Deno.test("audit verify: tampering with one event is detected and named", async (t) => {
  for (const kind of await drivers()) {
    await t.step(kind, async () => {
      const dir = kind === "pglite" ? await Deno.makeTempDir({ prefix: "chartlog-audit-" }) : "";
      const h = await openHarness(kind, {
        pgliteDir: kind === "pglite" ? `${dir}/pglite` : undefined,
      });
      try {
        for (let s = 0; s < 3; s++) {
          for (let v = 0; v < 4; v++) {
            await h.store.append(`counter-${s}`, v === 0 ? "no_stream" : v, [
              { type: "CounterIncremented", data: { by: v + 1 } },
            ], { actorId: "auditor-test" });
          }
        }
        await h.store.append("note-1", "no_stream", [{
          type: "NoteWritten",
          data: { subjectId: "patient-1", title: "t", text: "x" },
        }]);
        assert.deepEqual(
          { ...(await verifyChain(h.db)), firstBroken: null },
          { ok: true, events: 13, streams: 4, firstBroken: null, brokenCount: 0 },
        );
        const env = {
          DATABASE_URL: kind === "postgres" ? h.location : `pglite://${dir}/pglite`,
          CHARTLOG_MASTER_KEY: keyEnv(h.masterKey),
          CHARTLOG_DATA_DIR: dir || "/nonexistent-not-used",
        };
        if (kind === "pglite") await h.db.close(); // one process per PGlite data directory

        const clean = await runCli("audit.ts", ["verify"], env);
        assert.equal(clean.code, 0, clean.stderr);
        assert.match(clean.stdout, /^OK: 13 events in 4 streams/);

        // a superuser switches the trigger off and edits one event's payload
        const db = kind === "pglite" ? await openPglite(`${dir}/pglite`) : h.db;
        const [target] = await db.query<{ global_position: string }>(sql`select global_position
          from events where stream_id = 'counter-1' and stream_version = 3`);
        await db.exec(`alter table events disable trigger events_no_update;
          update events set data = '{"by": 300}' where global_position = ${
          Number(target!.global_position)
        };
          alter table events enable trigger events_no_update;`);
        const report = await verifyChain(db);
        assert.equal(report.ok, false);
        assert.deepEqual(report.firstBroken, {
          streamId: "counter-1",
          streamVersion: 3,
          globalPosition: Number(target!.global_position),
          problem: "hash_mismatch",
        });
        if (kind === "pglite") await db.close();

        const altered = await runCli("audit.ts", ["verify"], env);
        assert.equal(altered.code, 1, altered.stderr);
        assert.match(
          altered.stdout,
          new RegExp(
            `ALTERED: stream counter-1 version 3 \\(global position ${
              Number(target!.global_position)
            }\\): hash_mismatch`,
          ),
        );
      } finally {
        if (kind === "postgres") await h.close();
        if (dir) await Deno.remove(dir, { recursive: true });
      }
    });
  }
});

Deno.test("audit verify: a removed or reordered link breaks the chain", async () => {
  const h = await openHarness("pglite");
  try {
    for (let v = 0; v < 3; v++) {
      await h.store.append("counter-x", v === 0 ? "no_stream" : v, [
        { type: "CounterIncremented", data: { by: 1 } },
      ]);
    }
    // delete the middle event behind the trigger's back
    await h.db.exec(`alter table events disable trigger events_no_delete;
      delete from events where stream_id = 'counter-x' and stream_version = 2;
      alter table events enable trigger events_no_delete;`);
    const r = await verifyChain(h.db);
    assert.equal(r.ok, false);
    assert.equal(r.firstBroken?.streamVersion, 3);
    assert.equal(r.firstBroken?.problem, "version_gap");
  } finally {
    await h.close();
  }
});
