/**
 * The transparency log on PostgreSQL at TEST_DATABASE_URL: how fast the
 * stored Merkle tree is built over a seeded log, how long a checkpoint and a
 * proof take, and how fast `audit verify` checks the log (hash chains and
 * the tree recomputed from the events). Prints figures; never asserts on time.
 *
 *   BENCH_TLOG_EVENTS=100000 deno run -A tests/bench/tlog_bench.ts
 */
import { catalog } from "../../events/index.ts";
import { CheckpointSigner, generateCheckpointKey, keyNameOf } from "../../src/audit/checkpoint.ts";
import { publishCheckpoint } from "../../src/audit/publisher.ts";
import { extendTree, inclusionProof } from "../../src/audit/tlog_store.ts";
import { eventsFromDb, verifyLog, verifyTree } from "../../src/audit/tlog_verify.ts";
import { readInstallation } from "../../src/store/installation.ts";
import { openHarness } from "../support/harness.ts";
import { settled } from "../support/rfc9162.ts";
import { envInt, fmtInt } from "./stats.ts";

export const tlogBench = async (): Promise<string[]> => {
  const total = envInt("BENCH_TLOG_EVENTS", 100_000);
  const h = await openHarness("postgres", { catalog });
  const out: string[] = [];
  const line = (s: string) => {
    console.log(s);
    out.push(s);
  };
  try {
    const per = 5000;
    let seeded = 0;
    for (let i = 0; seeded < total; i++) {
      const n = Math.min(per, total - seeded);
      await h.store.append(
        `access-${crypto.randomUUID()}`,
        "no_stream",
        Array.from({ length: n }, (_, j) => ({
          type: "AuditQueried",
          data: { query: "events", filters: { types: ["PatientRegistered"] }, returned: j },
        })),
        { actorId: "bench", actorRole: "auditor", requestId: `req-${i}` },
      );
      seeded += n;
    }
    await settled(h.db);
    const time = async <T>(f: () => Promise<T>): Promise<[T, number]> => {
      const t = performance.now();
      const r = await f();
      return [r, (performance.now() - t) / 1000];
    };
    const [size, buildS] = await time(() => extendTree(h.db));
    line(
      `tlog build: ${fmtInt(size)} leaves in ${buildS.toFixed(2)} s = ${
        fmtInt(size / buildS)
      } events/s`,
    );
    const inst = await readInstallation(h.db);
    const ctx = {
      store: h.store,
      installationId: inst.id,
      signer: new CheckpointSigner(generateCheckpointKey(), keyNameOf(inst.id)),
    };
    const [, cpS] = await time(() => publishCheckpoint(ctx));
    line(`tlog checkpoint (tree already built): ${(cpS * 1000).toFixed(1)} ms`);
    const proofs = 200;
    const [, proofS] = await time(async () => {
      for (let i = 0; i < proofs; i++) {
        await inclusionProof(h.db, 1 + Math.floor(Math.random() * (size - 1)), size);
      }
    });
    line(
      `tlog inclusion proof at ${fmtInt(size)} leaves: ${
        (proofS * 1000 / proofs).toFixed(2)
      } ms each`,
    );
    const [tree, treeS] = await time(() => verifyTree(eventsFromDb(h.db), []));
    line(
      `tlog verify, tree only: ${fmtInt(tree.events)} events = ${
        fmtInt(tree.events / treeS)
      } events/s`,
    );
    const [r, verifyS] = await time(() => verifyLog(h.db));
    if (!r.ok) throw new Error(r.lines.join("\n"));
    line(`tlog verify, chains + tree + checkpoints: ${fmtInt(tree.events / verifyS)} events/s`);
  } finally {
    await h.close();
  }
  return out;
};

if (import.meta.main) await tlogBench();
