/**
 * `deno run <flags> pglite_init_outside.ts <dir>`: initialises a new PGlite
 * directory as openPglite would, under the flags given, and prints where
 * ("child" or "worker"). For tests/pglite_memory_test.ts.
 */
import { initOutside } from "../../src/store/pglite_driver.ts";

console.log(await initOutside(Deno.args[0]!));
