import assert from "node:assert/strict";
import { CheckpointSigner, generateCheckpointKey, keyNameOf } from "../src/audit/checkpoint.ts";
import { publishCheckpoint } from "../src/audit/publisher.ts";
import {
  leafHash,
  type StoredEventRow,
  storedEventsAfter,
  toStoredEvent,
} from "../src/audit/stored_event.ts";
import {
  consistencyProof,
  extendTree,
  extendTreeOnce,
  inclusionProof,
  rootAt,
  treeSize,
} from "../src/audit/tlog_store.ts";
import { verifyLog } from "../src/audit/tlog_verify.ts";
import type { Db } from "../src/store/db.ts";
import type { EventStore } from "../src/store/event_store.ts";
import { readInstallation } from "../src/store/installation.ts";
import { CHECKPOINT_PUBLISHER_LOCK } from "../src/store/locks.ts";
import { sql } from "../src/store/sql.ts";
import { Catalog } from "../src/store/catalog.ts";
import { CheckpointKeyAdopted, CheckpointPublished } from "../events/audit.ts";
import { subjectEvents } from "../events/subject.ts";
import { CounterIncremented } from "./fixtures/test_events.ts";
import { openTestApp } from "./support/app.ts";
import { createTestDatabase, drivers, eachDriver, openHarness } from "./support/harness.ts";
import {
  fromB64,
  mth,
  openCheckpoint,
  settled,
  verifyConsistency,
  verifyInclusion,
} from "./support/rfc9162.ts";
import { bearer, createUser, login } from "./support/users.ts";

/** The log's leaves, read and hashed here: position → leaf hash, in global order. */
const leaves = async (db: Db) =>
  (await db.query<StoredEventRow>(storedEventsAfter(0, 1_000_000))).map((r) => {
    const e = toStoredEvent(r);
    return { position: e.globalPosition, hash: leafHash(e) };
  });

const appendCounters = async (
  db: { store: EventStore },
  n: number,
  tag: string,
  per = 10,
) => {
  for (let i = 0; i < n; i += per) {
    const count = Math.min(per, n - i);
    await db.store.append(
      `counter-${tag}-${i}`,
      "no_stream",
      Array.from({ length: count }, () => ({ type: "CounterIncremented", data: { by: 1 } })),
    );
  }
};

/** Checks every proof the store serves for tree size `n` with the independent verifier. */
const checkSize = async (
  db: Db,
  all: { position: number; hash: Uint8Array }[],
  n: number,
  ms: number[],
) => {
  const hashes = all.map((l) => l.hash);
  const root = mth(hashes.slice(0, n));
  assert.deepEqual(await rootAt(db, n), root, `root of ${n}`);
  for (const m of ms) {
    if (m >= n) continue;
    const p = await inclusionProof(db, all[m]!.position, n);
    assert.equal(p.leafIndex, m);
    assert.ok(verifyInclusion(m, n, hashes[m]!, p.hashes, root), `inclusion ${m} in ${n}`);
    const c = await consistencyProof(db, m, n);
    assert.ok(
      verifyConsistency(m, n, mth(hashes.slice(0, m)), root, c.hashes),
      `consistency ${m} → ${n}`,
    );
  }
};

eachDriver(
  "tlog: proofs for tree sizes 1..70 and larger verify independently (RFC 9162)",
  async (h) => {
    assert.equal(await treeSize(h.db), 0);
    await appendCounters(h, 70, "a");
    await settled(h.db);
    // odd batches: the tree is extended across many transactions
    assert.equal(await extendTree(h.db, { batch: 13 }), 70);
    const all = await leaves(h.db);
    assert.equal(all.length, 70);
    for (let n = 1; n <= 70; n++) {
      const ms = n <= 17 ? [...Array(n).keys()] : [0, 1, n >> 1, n - 2, n - 1, 15, 16, 31, 32];
      await checkSize(h.db, all, n, ms);
    }
    await appendCounters(h, 1130, "b", 200);
    await settled(h.db);
    assert.equal(await extendTree(h.db), 1200);
    const more = await leaves(h.db);
    for (const n of [1024, 1025, 1099, 1200]) {
      await checkSize(h.db, more, n, [0, 5, 511, 512, 700, 1023, n - 1]);
    }
    // what the proofs refuse
    await assert.rejects(inclusionProof(h.db, more[3]!.position, 1201), /beyond/);
    await assert.rejects(inclusionProof(h.db, more[10]!.position, 10), /does not hold it/);
    await assert.rejects(inclusionProof(h.db, 9_999_999), /no event at that position/);
    await assert.rejects(consistencyProof(h.db, 5, 1201), /beyond/);
    await assert.rejects(consistencyProof(h.db, 6, 5), /larger/);
    assert.deepEqual((await consistencyProof(h.db, 0, 9)).hashes, []);
    assert.deepEqual((await consistencyProof(h.db, 9, 9)).hashes, []);
  },
);

Deno.test("tlog: the tree only takes events below the oldest in-flight transaction", async (t) => {
  if (!(await drivers()).includes("postgres")) return;
  await t.step("postgres", async () => {
    const h = await openHarness("postgres");
    const held = await h.db.reserve();
    try {
      await appendCounters(h, 3, "before");
      await settled(h.db);
      assert.equal(await extendTree(h.db), 3);
      // a slow writer takes a position, then others commit above it
      await held.query(sql`begin`);
      await held.query(sql`insert into events (stream_id, stream_version, event_id, type,
        schema_version, data, metadata, recorded_at, hash)
        values ('slow-1', 1, gen_random_uuid(), 'CounterIncremented', 1, '{"by":1}', '{}', now(), 'x')`);
      await appendCounters(h, 4, "after");
      assert.equal(await extendTreeOnce(h.db), 0, "nothing past the slow writer's position");
      assert.equal(await treeSize(h.db), 3);
      await held.query(sql`commit`);
      await settled(h.db);
      assert.equal(await extendTree(h.db), 8);
      const stored = await h.db.query<{ p: string }>(
        sql`select global_position as p from merkle_nodes where level = 0 order by idx`,
      );
      const positions = stored.map((r) => Number(r.p));
      assert.deepEqual(positions, [...positions].sort((a, b) => a - b), "leaves in global order");
      assert.deepEqual(positions, (await leaves(h.db)).map((l) => l.position));
    } finally {
      await held.release();
      await h.close();
    }
  });
});

eachDriver(
  "tlog: the stored tree writes no WAL; emptied as a crash leaves it, it is built again at once",
  async (h) => {
    if (h.kind === "postgres") {
      const [r] = await h.db.query<{ p: string }>(
        sql`select relpersistence as p from pg_class where oid = 'merkle_nodes'::regclass`,
      );
      assert.equal(r!.p, "u", "merkle_nodes is unlogged");
    }
    const inst = await readInstallation(h.db);
    const ctx = {
      store: h.store,
      installationId: inst.id,
      signer: new CheckpointSigner(generateCheckpointKey(), keyNameOf(inst.id)),
    };
    await appendCounters(h, 40, "a");
    await settled(h.db);
    const first = (await publishCheckpoint(ctx))!;
    // what a crash of the server does to an unlogged table
    await h.db.query(sql`truncate merkle_nodes`);
    await appendCounters(h, 2, "b");
    await settled(h.db);
    // not due (2 events, an hour to go), yet the tree is back at once
    const when = { events: 1000, seconds: 3600, now: new Date() };
    assert.equal(await publishCheckpoint(ctx, when), null);
    assert.ok(await treeSize(h.db) >= first.treeSize);
    const all = await leaves(h.db);
    const hashes = all.map((l) => l.hash);
    assert.deepEqual(await rootAt(h.db, first.treeSize), fromB64(first.rootHash));
    const m = 7;
    const p = await inclusionProof(h.db, all[m]!.position, first.treeSize);
    assert.ok(verifyInclusion(m, first.treeSize, hashes[m]!, p.hashes, fromB64(first.rootHash)));
    const next = (await publishCheckpoint(ctx))!;
    const c = await consistencyProof(h.db, first.treeSize, next.treeSize);
    assert.ok(verifyConsistency(
      first.treeSize,
      next.treeSize,
      fromB64(first.rootHash),
      fromB64(next.rootHash),
      c.hashes,
    ));
    const report = await verifyLog(h.db);
    assert.ok(report.ok, report.lines.join("\n"));
  },
  {
    catalog: new Catalog([
      ...subjectEvents,
      CounterIncremented,
      CheckpointPublished,
      CheckpointKeyAdopted,
    ]),
  },
);

const AUDITOR_EMAIL = "auditor@clinic.test";

Deno.test("tlog: checkpoints, public keys and proofs over HTTP, each use audited", async (t) => {
  for (const kind of await drivers()) {
    await t.step(kind, async () => {
      const pg = kind === "postgres" ? await createTestDatabase({ app: true }) : null;
      const app = await openTestApp(pg ? { DATABASE_URL: pg.url } : {});
      try {
        const rt = app.runtime;
        const admin = await createUser(rt, "admin", "admin@clinic.test");
        const auditor = await createUser(rt, "auditor", AUDITOR_EMAIL);
        await createUser(rt, "practitioner", "doc@clinic.test");
        const tok = {
          admin: (await login(app.app, admin.email)).body.accessToken as string,
          auditor: (await login(app.app, auditor.email)).body.accessToken as string,
          doc: (await login(app.app, "doc@clinic.test")).body.accessToken as string,
        };
        const get = async (who: keyof typeof tok | null, path: string) => {
          const res = await app.app.request(path, { headers: who ? bearer(tok[who]) : {} });
          return { status: res.status, body: await res.json() };
        };
        assert.equal((await get("auditor", "/v1/audit/checkpoints/latest")).status, 404);

        const ctx = await rt.tlog();
        await settled(rt.db);
        const c1 = await publishCheckpoint(ctx);
        assert.ok(c1);
        await createUser(rt, "practitioner", "doc2@clinic.test");
        await settled(rt.db);
        const c2 = await publishCheckpoint(ctx);
        assert.ok(c2 && c2.treeSize > c1.treeSize);

        // the public key needs no authentication
        const keys = await get(null, "/v1/audit/public-key");
        assert.equal(keys.status, 200);
        assert.equal(keys.body.verifierKeys.length, 1);
        assert.equal(keys.body.keys[0].kid, c1.keyId);
        assert.equal(keys.body.keys[0].crv, "Ed25519");
        const vkey = keys.body.verifierKeys[0] as string;

        const latest = await get("auditor", "/v1/audit/checkpoints/latest");
        assert.equal(latest.status, 200);
        assert.equal(latest.body.treeSize, c2.treeSize);
        const opened = await openCheckpoint(latest.body.note, vkey);
        assert.ok(opened, "the note verifies with the public key alone");
        const inst = await readInstallation(rt.db);
        assert.equal(opened.origin, `chartlog/${inst.id}`);
        assert.equal(opened.size, c2.treeSize);
        const all = await leaves(rt.db);
        assert.deepEqual(opened.root, mth(all.slice(0, c2.treeSize).map((l) => l.hash)));
        // a flipped byte in the note fails
        assert.equal(await openCheckpoint(latest.body.note.replace("\n", "x\n"), vkey), null);

        // pages, newest first
        const p1 = await get("admin", "/v1/audit/checkpoints?limit=1");
        assert.equal(p1.status, 200);
        assert.equal(p1.body.items[0].treeSize, c2.treeSize);
        const p2 = await get("admin", `/v1/audit/checkpoints?limit=1&cursor=${p1.body.nextCursor}`);
        assert.equal(p2.body.items[0].treeSize, c1.treeSize);
        assert.equal(p2.body.nextCursor, null);

        // an inclusion proof of an early event in the newest checkpoint
        const target = all[3]!;
        const inc = await get(
          "auditor",
          `/v1/audit/proofs/inclusion?position=${target.position}&treeSize=${c2.treeSize}`,
        );
        assert.equal(inc.status, 200);
        assert.ok(verifyInclusion(
          inc.body.leafIndex,
          c2.treeSize,
          target.hash,
          inc.body.hashes.map(fromB64),
          opened.root,
        ));
        const con = await get(
          "auditor",
          `/v1/audit/proofs/consistency?from=${c1.treeSize}&to=${c2.treeSize}`,
        );
        assert.equal(con.status, 200);
        assert.ok(verifyConsistency(
          c1.treeSize,
          c2.treeSize,
          fromB64(c1.rootHash),
          opened.root,
          con.body.hashes.map(fromB64),
        ));

        // refusals: role, bad input, sizes beyond the tree
        assert.equal((await get("doc", "/v1/audit/checkpoints")).status, 403);
        assert.equal((await get("doc", "/v1/audit/proofs/inclusion?position=1")).status, 403);
        assert.equal((await get(null, "/v1/audit/checkpoints")).status, 401);
        for (
          const q of [
            "position=abc",
            "position=-1",
            "position=1e3",
            "position=",
            "position=%00",
            "position=1&treeSize=99999999999999999999",
          ]
        ) {
          const r = await get("auditor", `/v1/audit/proofs/inclusion?${q}`);
          assert.ok(r.status >= 400 && r.status < 500, `${q}: ${r.status}`);
        }
        assert.equal((await get("auditor", "/v1/audit/checkpoints?cursor=x%00")).status, 422);
        const beyond = await get(
          "auditor",
          `/v1/audit/proofs/inclusion?position=${target.position}&treeSize=99999`,
        );
        assert.equal(beyond.status, 409);
        assert.equal(
          (await get("auditor", "/v1/audit/proofs/consistency?from=1&to=99999")).status,
          409,
        );
        assert.equal(
          (await get("auditor", "/v1/audit/proofs/inclusion?position=99999")).status,
          404,
        );

        // every use by the auditor is in their access stream
        const reads = await rt.db.query<{ q: string }>(sql`select data->>'query' as q from events
          where stream_id = ${`access-${auditor.id}`} and type = 'TransparencyLogRead'`);
        assert.deepEqual(
          new Set(reads.map((r) => r.q)),
          new Set(["latest-checkpoint", "inclusion", "consistency"]),
        );

        // rotation: a new key is adopted before its first checkpoint; both keys stay listed
        const rotated = await publishCheckpoint({
          ...ctx,
          signer: new CheckpointSigner(generateCheckpointKey(), keyNameOf(inst.id)),
        });
        assert.ok(rotated && rotated.keyId !== c1.keyId);
        const after = await get(null, "/v1/audit/public-key");
        assert.equal(after.body.verifierKeys.length, 2);
        assert.ok(await openCheckpoint(c1.note, after.body.verifierKeys[0]));
        assert.ok(await openCheckpoint(rotated.note, after.body.verifierKeys[1]));
        const report = await verifyLog(rt.db);
        assert.ok(report.ok, report.lines.join("\n"));
        assert.match(report.lines.join("\n"), /OK: 3 checkpoints verify/);
      } finally {
        await app.close();
        await pg?.drop();
      }
    });
  }
});

Deno.test("tlog: the publisher publishes in the background and survives a killed connection", async (t) => {
  if (!(await drivers()).includes("postgres")) return;
  await t.step("postgres", async () => {
    const pg = await createTestDatabase({ app: true });
    const app = await openTestApp({
      DATABASE_URL: pg.url,
      CHARTLOG_CHECKPOINT_EVENTS: "3",
      CHARTLOG_CHECKPOINT_SECONDS: "3600",
    }, { workers: true });
    const rt = app.runtime;
    const latestSize = async () => {
      const [r] = await rt.db.query<{ n: number | null }>(
        sql`select max((data->>'treeSize')::int) as n
        from events where type = 'CheckpointPublished'`,
      );
      return Number(r?.n ?? 0);
    };
    const waitFor = async (ok: () => Promise<boolean>) => {
      for (let i = 0; i < 300 && !(await ok()); i++) await new Promise((r) => setTimeout(r, 100));
      assert.ok(await ok(), "the publisher did not publish");
    };
    try {
      for (let i = 0; i < 3; i++) await createUser(rt, "practitioner", `p${i}@clinic.test`);
      await waitFor(async () => (await latestSize()) > 0);
      const first = await latestSize();
      // kill the publisher's session (the one holding its lock)
      const killed = await rt.db.query<{ ok: boolean }>(sql`select pg_terminate_backend(pid) as ok
        from pg_locks where locktype = 'advisory' and database = (select oid from pg_database
          where datname = current_database())
          and objid::text::bigint = (hashtext(${CHECKPOINT_PUBLISHER_LOCK})::bigint & 4294967295)`);
      assert.equal(killed.length, 1);
      for (let i = 3; i < 6; i++) await createUser(rt, "practitioner", `p${i}@clinic.test`);
      await waitFor(async () => (await latestSize()) > first);
      const report = await verifyLog(rt.db);
      assert.ok(report.ok, report.lines.join("\n"));
      // no PHI in its logs: the emails of the users never appear
      assert.doesNotMatch(
        app.logs.lines.filter((l) => l.worker === "checkpoint-publisher").map((l) =>
          JSON.stringify(l)
        )
          .join(""),
        /clinic\.test/,
      );
    } finally {
      await app.close();
      await pg.drop();
    }
  });
});
