// Each tampering of the issue, made to events a checkpoint covers, makes
// `audit verify` fail and name it; with the checkpoint events (and the
// stored tree) deleted too, a checkpoint kept in a file still catches it.
import assert from "node:assert/strict";
import { catalog } from "../events/index.ts";
import {
  CheckpointSigner,
  generateCheckpointKey,
  keyNameOf,
  verifyCheckpointNote,
} from "../src/audit/checkpoint.ts";
import { b64 } from "../src/audit/merkle.ts";
import { type Checkpoint, publishCheckpoint, type TlogContext } from "../src/audit/publisher.ts";
import {
  type StoredEventRow,
  storedEventsAfter,
  toStoredEvent,
} from "../src/audit/stored_event.ts";
import { eventsFromExport, verifyLog, verifyTree } from "../src/audit/tlog_verify.ts";
import type { Db } from "../src/store/db.ts";
import { eventHash } from "../src/store/hash_chain.ts";
import { readInstallation } from "../src/store/installation.ts";
import { sql } from "../src/store/sql.ts";
import { keyEnv, runCli } from "./support/cli.ts";
import { drivers, type Harness, openHarness } from "./support/harness.ts";
import { fromB64, openCheckpoint, settled, verifyInclusion } from "./support/rfc9162.ts";

interface Scene {
  h: Harness;
  ctx: TlogContext;
  streams: string[];
  first: Checkpoint;
  /** The first checkpoint as a claim kept outside the database. */
  kept: { label: string; treeSize: number; rootHash: string; origin: string };
}

/** 5 streams × 4 events, interleaved; a checkpoint of those 20; 5 more events; another checkpoint. */
const scene = async (kind: "postgres" | "pglite"): Promise<Scene> => {
  const h = await openHarness(kind, { catalog });
  const inst = await readInstallation(h.db);
  const ctx: TlogContext = {
    store: h.store,
    installationId: inst.id,
    signer: new CheckpointSigner(generateCheckpointKey(), keyNameOf(inst.id)),
  };
  const streams = Array.from({ length: 6 }, () => `access-${crypto.randomUUID()}`);
  const read = (returned: number) => ({
    type: "AuditQueried",
    data: { query: "events", filters: {}, returned },
  });
  for (let v = 1; v <= 4; v++) {
    for (const s of streams.slice(0, 5)) {
      await h.store.append(s, v === 1 ? "no_stream" : v - 1, [read(v)], {
        actorId: s.slice(7),
        actorRole: "auditor",
      });
    }
  }
  await settled(h.db);
  const first = (await publishCheckpoint(ctx))!;
  assert.equal(first.treeSize, 20);
  for (let v = 1; v <= 5; v++) {
    await h.store.append(streams[5]!, v === 1 ? "no_stream" : v - 1, [read(v)]);
  }
  await settled(h.db);
  assert.ok(await publishCheckpoint(ctx));
  const parsed = verifyCheckpointNote(first.note, ctx.signer.verifierKey);
  const kept = {
    label: "kept.note",
    treeSize: parsed.treeSize,
    rootHash: b64(parsed.rootHash),
    origin: parsed.origin,
  };
  const clean = await verifyLog(h.db);
  assert.ok(clean.ok, clean.lines.join("\n"));
  return { h, ctx, streams, first, kept };
};

const positionOf = async (db: Db, stream: string, version: number) => {
  const [r] = await db.query<{ p: string }>(sql`select global_position as p from events
    where stream_id = ${stream} and stream_version = ${version}`);
  return Number(r!.p);
};

/** As a superuser: the append-only triggers off for the length of `fn`. */
const behindTriggers = async (db: Db, fn: (tx: Db) => Promise<void>) =>
  await db.transaction(async (tx) => {
    await tx.exec("alter table events disable trigger user");
    await fn(tx);
    await tx.exec("alter table events enable trigger user");
  });

/** Moves an event to another global position (delete, insert again with the position given). */
const move = (tx: Db, from: number, to: number) =>
  tx.query(sql`with gone as (delete from events where global_position = ${from} returning *)
    insert into events overriding system value
    select ${to}::bigint, stream_id, stream_version, event_id, type, schema_version, data,
      metadata, recorded_at, transaction_id, prev_hash, hash from gone`);

/** Edits a payload and recomputes the stream's hash chain with the project's own hash. */
const editAndRehash = async (tx: Db, stream: string, version: number) => {
  await tx.query(sql`update events set data = jsonb_set(data, '{returned}', '99')
    where stream_id = ${stream} and stream_version = ${version}`);
  const rows = await tx.query<
    StoredEventRow & { recorded: Date | string }
  >(sql`select global_position, stream_id, stream_version, event_id::text as event_id, type,
      schema_version, data, metadata, recorded_at as recorded, prev_hash, hash
    from events where stream_id = ${stream} order by stream_version`);
  let prev: string | null = null;
  for (const r of rows) {
    const v = Number(r.stream_version);
    if (v >= version) {
      const hash = eventHash({
        streamId: r.stream_id,
        streamVersion: v,
        eventId: r.event_id,
        type: r.type,
        schemaVersion: Number(r.schema_version),
        data: r.data,
        metadata: r.metadata,
        recordedAt: new Date(r.recorded),
        prevHash: prev,
      });
      await tx.query(sql`update events set prev_hash = ${prev}, hash = ${hash}
        where stream_id = ${stream} and stream_version = ${v}`);
      prev = hash;
    } else prev = r.hash;
  }
};

const writeExport = async (db: Db, path: string) => {
  const rows = await db.query<StoredEventRow>(storedEventsAfter(0, 1_000_000));
  await Deno.writeTextFile(
    path,
    rows.map((r) => JSON.stringify(toStoredEvent(r))).join("\n") + "\n",
  );
};

/** Deletes the checkpoint events and the stored tree: an attacker covering their tracks. */
const dropCheckpoints = (db: Db) =>
  behindTriggers(db, async (tx) => {
    await tx.query(sql`delete from events where stream_id = 'audit-checkpoints'`);
    await tx.query(sql`delete from merkle_nodes`);
  });

const CASES: {
  name: string;
  tamper: (s: Scene, tx: Db) => Promise<RegExp>;
  /** The hash chains alone see it too (a stream's versions out of global order). */
  chainSees?: boolean;
}[] = [
  {
    name: "edit one event and rehash its stream",
    tamper: async (s, tx) => {
      const p = await positionOf(tx, s.streams[1]!, 2);
      await editAndRehash(tx, s.streams[1]!, 2);
      return new RegExp(
        `event at global position ${p} \\(stream ${s.streams[1]} version 2\\) is not the one`,
      );
    },
  },
  {
    name: "delete a stream's last event",
    tamper: async (s, tx) => {
      const p = await positionOf(tx, s.streams[2]!, 4);
      await tx.query(sql`delete from events where global_position = ${p}`);
      return new RegExp(`the event at global position ${p} is missing`);
    },
  },
  {
    name: "delete a whole stream",
    tamper: async (s, tx) => {
      const p = await positionOf(tx, s.streams[3]!, 1);
      await tx.query(sql`delete from events where stream_id = ${s.streams[3]!}`);
      return new RegExp(`the event at global position ${p} is missing`);
    },
  },
  {
    name: "move an event to another global position",
    chainSees: true,
    tamper: async (s, tx) => {
      const p = await positionOf(tx, s.streams[0]!, 2);
      await move(tx, p, p + 1000);
      return new RegExp(`the event at global position ${p} is missing \\(removed or moved\\)`);
    },
  },
  {
    name: "reorder two events",
    tamper: async (s, tx) => {
      const a = await positionOf(tx, s.streams[0]!, 3);
      const b = await positionOf(tx, s.streams[4]!, 3);
      await move(tx, a, 1_000_000);
      await move(tx, b, a);
      await move(tx, 1_000_000, b);
      return new RegExp(
        `event at global position ${Math.min(a, b)} \\(stream .*\\) is not the one`,
      );
    },
  },
];

Deno.test("tlog tamper: every case fails verify and is named, also against a kept checkpoint", async (t) => {
  const dir = await Deno.makeTempDir({ prefix: "chartlog-tlog-" });
  try {
    for (const kind of await drivers()) {
      for (const c of CASES) {
        await t.step(`${kind}: ${c.name}`, async () => {
          const s = await scene(kind);
          try {
            let expected = /./;
            await behindTriggers(s.h.db, async (tx) => void (expected = await c.tamper(s, tx)));
            const r = await verifyLog(s.h.db);
            const text = r.lines.join("\n");
            assert.equal(r.ok, false, text);
            assert.match(text, expected);
            assert.match(text, /FAILED: checkpoint \d+ \(global position \d+\) \(tree size 20\)/);

            // the checkpoints and the stored tree deleted too: only a kept checkpoint sees it
            await dropCheckpoints(s.h.db);
            const blind = await verifyLog(s.h.db);
            assert.match(blind.lines.join("\n"), /no checkpoints yet/);
            if (c.chainSees) {
              assert.match(blind.lines.join("\n"), /ALTERED: stream .* version_gap/);
            } else assert.ok(blind.ok, "no in-database check can see this (README says so)");
            const kept = await verifyLog(s.h.db, { outside: s.kept });
            assert.equal(kept.ok, false);
            assert.match(kept.lines.join("\n"), /FAILED: kept\.note \(tree size 20\)/);
            // and the same from an export, with only the public key
            const file = `${dir}/${kind}-${CASES.indexOf(c)}.jsonl`;
            await writeExport(s.h.db, file);
            const fromExport = await verifyTree(eventsFromExport(file), [s.kept], { chains: true });
            assert.equal(fromExport.ok, false);
            assert.match(fromExport.problems.map((p) => p.message).join("\n"), /kept\.note/);
          } finally {
            await s.h.close();
          }
        });
      }
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("tlog CLI: checkpoint, prove, verify (in the database, a kept file, an export)", async (t) => {
  if (!(await drivers()).includes("postgres")) return;
  await t.step("postgres", async () => {
    const dir = await Deno.makeTempDir({ prefix: "chartlog-tlog-cli-" });
    const s = await scene("postgres");
    try {
      const env = {
        DATABASE_URL: s.h.location,
        CHARTLOG_MASTER_KEY: keyEnv(s.h.masterKey),
        CHARTLOG_DATA_DIR: dir,
      };
      // a checkpoint now, with the development key generated into the data directory
      await settled(s.h.db);
      const cp = await runCli("audit.ts", ["checkpoint"], env);
      assert.equal(cp.code, 0, cp.stderr);
      const key = (await Deno.readTextFile(`${dir}/checkpoint.key`)).trim();
      const signer = new CheckpointSigner(fromB64(key), keyNameOf(s.ctx.installationId));
      const opened = await openCheckpoint(cp.stdout, signer.verifierKey);
      assert.ok(opened, cp.stdout);

      const target = await positionOf(s.h.db, s.streams[1]!, 2);
      const pr = await runCli("audit.ts", [
        "prove",
        "inclusion",
        "--position",
        String(target),
        "--tree-size",
        String(opened.size),
      ], env);
      assert.equal(pr.code, 0, pr.stderr);
      const proof = JSON.parse(pr.stdout);
      const [row] = await s.h.db.query<StoredEventRow>(storedEventsAfter(target - 1, 1));
      const { leafHash } = await import("../src/audit/stored_event.ts");
      assert.ok(verifyInclusion(
        proof.leafIndex,
        opened.size,
        leafHash(toStoredEvent(row!)),
        proof.hashes.map(fromB64),
        opened.root,
      ));
      const bad = await runCli(
        "audit.ts",
        ["prove", "consistency", "--from", "1", "--to", "99999"],
        env,
      );
      assert.equal(bad.code, 1);
      assert.match(bad.stderr, /beyond/);
      assert.equal(
        (await runCli("audit.ts", ["prove", "inclusion", "--position", "x"], env)).code,
        2,
      );

      const ok = await runCli("audit.ts", ["verify"], env);
      assert.equal(ok.code, 0, ok.stdout + ok.stderr);
      assert.match(ok.stdout, /OK: 3 checkpoints verify/);

      await behindTriggers(s.h.db, (tx) => editAndRehash(tx, s.streams[1]!, 2));
      const altered = await runCli("audit.ts", ["verify"], env);
      assert.equal(altered.code, 1);
      assert.match(altered.stdout, /every hash chain verifies/);
      assert.match(altered.stdout, new RegExp(`FAILED: event at global position ${target} `));

      await dropCheckpoints(s.h.db);
      const note = `${dir}/kept.note`;
      await Deno.writeTextFile(note, s.first.note);
      const vk = s.ctx.signer.verifierKey;
      const blind = await runCli("audit.ts", ["verify"], env);
      assert.equal(blind.code, 0, blind.stdout);
      const kept = await runCli(
        "audit.ts",
        ["verify", "--checkpoint", note, "--public-key", vk],
        env,
      );
      assert.equal(kept.code, 1, kept.stdout + kept.stderr);
      assert.match(kept.stdout, /FAILED: .*kept\.note \(tree size 20\)/);
      const file = `${dir}/export.jsonl`;
      await writeExport(s.h.db, file);
      const ex = await runCli("audit.ts", [
        "verify",
        "--export",
        file,
        "--checkpoint",
        note,
        "--public-key",
        vk,
      ], {});
      assert.equal(ex.code, 1, ex.stdout + ex.stderr);
      assert.match(ex.stdout, /FAILED: .*kept\.note \(tree size 20\)/);
      // a wrong key is refused before anything else
      const other = new CheckpointSigner(generateCheckpointKey(), "someone-else").verifierKey;
      const wrong = await runCli("audit.ts", [
        "verify",
        "--checkpoint",
        note,
        "--public-key",
        other,
      ], env);
      assert.equal(wrong.code, 1);
      assert.match(wrong.stdout, /no signature by that key/);
    } finally {
      await s.h.close();
      await Deno.remove(dir, { recursive: true });
    }
  });
});
