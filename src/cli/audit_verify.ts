// `deno task audit verify`: recomputes every stream's hash chain and the
// transparency log's Merkle tree from the events, and checks every
// checkpoint against them. (Run through src/cli/audit.ts.)
import { verifyCheckpointNote } from "../audit/checkpoint.ts";
import { b64 } from "../audit/merkle.ts";
import {
  chainLines,
  type CheckpointClaim,
  eventsFromExport,
  type TlogProblem,
  verifyLog,
  verifyTree,
} from "../audit/tlog_verify.ts";
import { openCli, parseCliArgs, usageError } from "./common.ts";

const { values, positionals } = parseCliArgs(
  "audit",
  `usage: deno task audit verify [--checkpoint FILE --public-key KEY] [--export FILE]

verify   recomputes every stream's hash chain and the transparency log's Merkle
         tree from the events; checks every checkpoint's signature, its root
         against the events it covers, and that each is consistent with the
         one before. Prints "OK: …" and exits 0, or names what failed (an
         event, a missing range, a checkpoint) and exits 1.

  --checkpoint FILE   also check the log against a checkpoint kept outside the
                      database (the signed note, as published)
  --public-key KEY    the verifier key string that signed it
                      (<name>+<key id>+<key>, from GET /v1/audit/public-key)
  --export FILE       check a JSONL export (one stored event a line) instead
                      of the database: no database or key needed beyond KEY

On the embedded database, stop the server first.`,
  {
    checkpoint: { type: "string" },
    "public-key": { type: "string" },
    export: { type: "string" },
  },
  { positionals: true },
);
if (positionals.length > 1) usageError("audit", `unexpected argument '${positionals[1]}'`);
if ((values.checkpoint === undefined) !== (values["public-key"] === undefined)) {
  usageError("audit", "--checkpoint and --public-key go together");
}
if (values.export !== undefined && values.checkpoint === undefined) {
  usageError("audit", "--export needs --checkpoint and --public-key");
}

const fail = (problems: readonly TlogProblem[]) => {
  for (const p of problems.slice(0, 20)) console.log(`FAILED: ${p.message}`);
  if (problems.length > 20) console.log(`… and ${problems.length - 20} more`);
};

/** The checkpoint kept outside, its signature checked; exits 1 when it does not verify. */
const external = async (): Promise<(CheckpointClaim & { origin: string }) | null> => {
  if (values.checkpoint === undefined) return null;
  const note = await Deno.readTextFile(values.checkpoint).catch((err) => {
    usageError("audit", `cannot read ${values.checkpoint}: ${(err as Error).name}`);
    throw err;
  });
  try {
    const c = verifyCheckpointNote(note, values["public-key"]!);
    return {
      label: values.checkpoint,
      treeSize: c.treeSize,
      rootHash: b64(c.rootHash),
      origin: c.origin,
    };
  } catch (err) {
    console.log(`FAILED: ${values.checkpoint}: ${(err as Error).message}`);
    Deno.exit(1);
  }
};

const outside = await external();
const progress = (n: number) => console.error(`… ${n} events`);

if (values.export !== undefined) {
  const r = await verifyTree(eventsFromExport(values.export), [outside!], {
    chains: true,
    onProgress: progress,
  }).catch((err) => {
    console.log(`FAILED: ${(err as Error).message}`);
    Deno.exit(1);
  });
  for (const line of chainLines(r)) console.log(line);
  if (r.problems.length === 0) {
    console.log(
      `OK: ${outside!.label} (${outside!.origin}, tree size ${outside!.treeSize}) verifies: ` +
        `the first ${outside!.treeSize} events of ${values.export} are as signed`,
    );
  } else fail(r.problems);
  if (!r.ok) Deno.exitCode = 1;
} else {
  const { runtime } = await openCli();
  try {
    const r = await verifyLog(runtime.db, { outside: outside ?? undefined, onProgress: progress });
    for (const line of r.lines) console.log(line);
    if (!r.ok) Deno.exitCode = 1;
  } finally {
    await runtime.close();
  }
}
