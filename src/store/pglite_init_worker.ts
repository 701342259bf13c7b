/// <reference lib="deno.worker" />
/**
 * Runs PGlite's initdb on a new data directory, on a Worker of its own. The
 * first open of an empty directory starts a second, in-memory PGlite plus the
 * initdb module to make it, and the heaps they leave behind (about 300 MB,
 * measured) are never handed back by the main isolate: terminating this
 * Worker drops them with its isolate. See openPglite.
 */
import { PGlite } from "@electric-sql/pglite";
import type { InitReply, InitRequest } from "./pglite_driver.ts";

self.onmessage = async (e: MessageEvent<InitRequest>) => {
  try {
    const pg = await PGlite.create(e.data.dataDir, {
      startParams: e.data.startParams,
      initDbStartParams: e.data.initDbStartParams,
    });
    await pg.close();
    self.postMessage({ ok: true } satisfies InitReply);
  } catch (err) {
    const { name = "Error", message = String(err) } = err as Error;
    self.postMessage({ ok: false, name, message } satisfies InitReply);
  }
};
