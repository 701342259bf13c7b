// `deno task audit checkpoint`: extends the transparency log's tree and
// publishes a signed checkpoint now. (Run through src/cli/audit.ts.)
import { publishCheckpoint } from "../audit/publisher.ts";
import { openCli, parseCliArgs, usageError } from "./common.ts";

const { positionals } = parseCliArgs(
  "audit",
  `usage: deno task audit checkpoint

checkpoint   adds the events committed so far to the transparency log's Merkle
             tree and publishes a signed checkpoint of it (an event in the
             audit-checkpoints stream); prints the signed note. Keep a copy
             outside the database: \`deno task audit verify --checkpoint FILE\`
             proves against it later.
On the embedded database, stop the server first.`,
  {},
  { positionals: true },
);
if (positionals.length > 1) usageError("audit", `unexpected argument '${positionals[1]}'`);

const { runtime } = await openCli();
try {
  const c = await publishCheckpoint(await runtime.tlog());
  if (!c) {
    console.error("audit: another publisher appended a checkpoint at the same time; try again");
    Deno.exitCode = 1;
  } else {
    Deno.stdout.writeSync(new TextEncoder().encode(c.note));
  }
} finally {
  await runtime.close();
}
