// `deno task audit prove inclusion|consistency`: prints RFC 9162 proofs
// from the stored tree as JSON (hashes base64). (Run through src/cli/audit.ts.)
import { b64 } from "../audit/merkle.ts";
import { consistencyProof, inclusionProof, treeSize } from "../audit/tlog_store.ts";
import { ChartlogError } from "../errors.ts";
import { openCli, parseCliArgs, usageError } from "./common.ts";

const { values, positionals } = parseCliArgs(
  "audit",
  `usage: deno task audit prove inclusion --position N [--tree-size N]
       deno task audit prove consistency --from A --to B

inclusion     the audit path of the event at global position N in the tree of
              the given size (default: the whole tree built so far):
              {"leafIndex", "treeSize", "hashes"}
consistency   the proof that the tree of A leaves is a prefix of the tree of B:
              {"from", "to", "hashes"}
Hashes are base64. The tree grows as checkpoints are published.
On the embedded database, stop the server first.`,
  {
    position: { type: "string" },
    "tree-size": { type: "string" },
    from: { type: "string" },
    to: { type: "string" },
  },
  { positionals: true },
);

const count = (name: string, v: string | undefined): number | undefined => {
  if (v === undefined) return undefined;
  if (!/^(0|[1-9][0-9]{0,14})$/.test(v)) usageError("audit", `--${name} must be a whole number`);
  return Number(v);
};
const kind = positionals[1];
if (kind !== "inclusion" && kind !== "consistency") {
  usageError("audit", "prove what: inclusion or consistency");
}
if (positionals.length > 2) usageError("audit", `unexpected argument '${positionals[2]}'`);
const position = count("position", values.position);
const size = count("tree-size", values["tree-size"]);
const from = count("from", values.from);
const to = count("to", values.to);
if (kind === "inclusion" && position === undefined) usageError("audit", "--position is required");
if (kind === "consistency" && (from === undefined || to === undefined)) {
  usageError("audit", "--from and --to are required");
}

const { runtime } = await openCli();
try {
  const db = runtime.db;
  const out = kind === "inclusion"
    ? await inclusionProof(db, position!, size).then((p) => ({ ...p, hashes: p.hashes.map(b64) }))
    : await consistencyProof(db, from!, to!).then((p) => ({ ...p, hashes: p.hashes.map(b64) }));
  console.log(JSON.stringify(out, null, 2));
} catch (err) {
  if (!(err instanceof ChartlogError)) throw err;
  console.error(`audit: ${err.message} (the tree holds ${await treeSize(runtime.db)} leaves)`);
  Deno.exitCode = 1;
} finally {
  await runtime.close();
}
