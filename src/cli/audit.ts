// `deno task audit verify`: recomputes every stream's hash chain.
import { verifyChain } from "../store/verify_chain.ts";
import { openCli } from "./common.ts";

const [command] = Deno.args;
if (command !== "verify") {
  console.error("usage: deno task audit verify");
  Deno.exit(2);
}
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
