/**
 * Initialises a new PGlite data directory in a process of its own:
 * `deno run --allow-read --allow-write=<dir>,<dir>.lock,<dir>.initdb pglite_init_child.ts <dir>`,
 * started by openPglite (src/store/pglite_driver.ts). Everything initdb
 * allocated goes back to the OS when it exits. Its last stdout line is the
 * {@link InitReply}; it exits 1 on a failure.
 */
import { initReply } from "./pglite_driver.ts";

const [dataDir] = Deno.args;
if (Deno.args.length !== 1 || !dataDir) {
  console.error("usage: pglite_init_child.ts <data directory>");
  Deno.exit(2);
}
const reply = await initReply(dataDir);
console.log(JSON.stringify(reply));
if (!reply.ok) Deno.exitCode = 1;
