// `deno task rebuild NAME|--all`: replays the log from position 0 into projections.
import { openCli, parseCliArgs, progressBar, usageError } from "./common.ts";
import { rebuildProjection } from "../store/projection_engine.ts";

const { positionals, values } = parseCliArgs(
  "rebuild",
  `usage: deno task rebuild <projection-name>
       deno task rebuild --all

Replays the event log from position 0 into the named projection (or every
projection with --all), with a progress bar on stderr. A rebuild reproduces
the same rows. \`deno task status\` lists the projections.
On the embedded database, stop the server first.`,
  { all: { type: "boolean" } },
  { positionals: true },
);
if (values.all ? positionals.length !== 0 : positionals.length !== 1) {
  usageError("rebuild", "give one projection name, or --all");
}

const { runtime } = await openCli();
try {
  const targets = values.all
    ? runtime.projections
    : runtime.projections.filter((p) => p.name === positionals[0]);
  if (targets.length === 0) {
    console.error(
      `rebuild: no projection named '${positionals[0]}'; known: ${
        runtime.projections.map((p) => p.name).join(", ")
      }`,
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
