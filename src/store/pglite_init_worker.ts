/// <reference lib="deno.worker" />
/**
 * Initialises a new PGlite data directory on a Worker of its own, when the
 * server may not start a child process (src/store/pglite_init_child.ts).
 * initdb starts a second, in-memory PGlite plus the initdb module, and the
 * heaps they leave behind (about 300 MB, measured) are never handed back by
 * the isolate that ran them: terminating this Worker drops most of them.
 * See openPglite.
 */
import { initReply } from "./pglite_driver.ts";

self.onmessage = async (e: MessageEvent<string>) => {
  self.postMessage(await initReply(e.data));
};
