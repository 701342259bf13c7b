// `deno task rebuild NAME|--all`: replays the log from position 0 into projections.
import { rebuildProjection } from "../store/projection_engine.ts";
import { openCli, progressBar } from "./common.ts";

const args = Deno.args;
if (args.length !== 1) {
  console.error("usage: deno task rebuild <projection-name> | --all");
  Deno.exit(2);
}
const { runtime } = await openCli();
try {
  const targets = args[0] === "--all"
    ? runtime.projections
    : runtime.projections.filter((p) => p.name === args[0]);
  if (targets.length === 0) {
    console.error(
      `no projection named ${args[0]}; known: ${runtime.projections.map((p) => p.name).join(", ")}`,
    );
    Deno.exitCode = 2;
  }
  for (const p of targets) {
    const started = performance.now();
    const n = await rebuildProjection(runtime.store, p, progressBar(p.name));
    const s = (performance.now() - started) / 1000;
    console.log(`${p.name} v${p.version}: rebuilt from ${n} events in ${s.toFixed(1)} s`);
  }
} finally {
  await runtime.close();
}
