// `deno task audit verify`: recomputes every stream's hash chain.
// (Run through src/cli/audit.ts, which picks the subcommand's module.)
import { verifyChain } from "../store/verify_chain.ts";
import { openCli, parseCliArgs, usageError } from "./common.ts";

const { positionals } = parseCliArgs(
  "audit",
  `usage: deno task audit verify

verify   recomputes every stream's hash chain; prints "OK: …" and exits 0, or
         names the first altered event and exits 1.
On the embedded database, stop the server first.`,
  {},
  { positionals: true },
);
if (positionals.length > 1) usageError("audit", `unexpected argument '${positionals[1]}'`);

const { runtime } = await openCli();
try {
  const r = await verifyChain(runtime.db);
  if (r.ok) {
    console.log(`OK: ${r.events} events in ${r.streams} streams; every hash chain verifies`);
  } else {
    const b = r.firstBroken!;
    console.log(
      `ALTERED: stream ${b.streamId} version ${b.streamVersion} (global position ${b.globalPosition}): ${b.problem}`,
    );
    console.log(`${r.brokenCount} of ${r.events} events in ${r.streams} streams fail verification`);
    Deno.exitCode = 1;
  }
} finally {
  await runtime.close();
}
