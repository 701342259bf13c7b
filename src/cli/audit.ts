// `deno task audit <subcommand>`: each subcommand is a module of its own
// (src/cli/audit_<name>.ts) that parses the rest of the arguments itself.
import { usageError } from "./common.ts";

const SUBCOMMANDS: Record<string, () => Promise<unknown>> = {
  verify: () => import("./audit_verify.ts"),
  replay: () => import("./audit_replay.ts"),
  export: () => import("./audit_export.ts"),
  checkpoint: () => import("./audit_checkpoint.ts"),
  prove: () => import("./audit_prove.ts"),
};

const USAGE = `usage: deno task audit <subcommand> [--help]

subcommands: ${Object.keys(SUBCOMMANDS).join(", ")}
Each takes --help. On the embedded database, stop the server first.`;

const sub = Deno.args[0];
if (sub === "--help" || sub === "-h") {
  console.log(USAGE);
  Deno.exit(0);
}
if (sub === undefined) usageError("audit", "a subcommand is required");
const load = SUBCOMMANDS[sub!];
if (!load) usageError("audit", `unknown subcommand '${sub}'`);
await load!();
