import { type Config, loadConfig } from "../../src/config.ts";
import { createApp } from "../../src/http/app.ts";
import { createLogger, type Logger } from "../../src/logger.ts";
import { openRuntime, type OutboxRuntimeOptions, type Runtime } from "../../src/runtime.ts";
import { UnavailableError } from "../../src/errors.ts";
import { openMigratedPglite } from "./pglite_image.ts";
import { generateCheckpointKey } from "../../src/audit/checkpoint.ts";

/** A fixed checkpoint signing key for tests (Ed25519, PKCS#8, base64). */
export const TEST_CHECKPOINT_KEY = btoa(String.fromCharCode(...generateCheckpointKey()));

/** Captured log lines (parsed JSON) of an app under test. */
export interface LogCapture {
  lines: Record<string, unknown>[];
  text(): string;
}

/** The app on an in-memory PGlite, with logs captured for inspection. */
export const openTestApp = async (
  env: Record<string, string> = {},
  opts: {
    now?: () => Date;
    /** Start the async projection workers (default false: tests fold on demand or not at all). */
    workers?: boolean;
    outbox?: OutboxRuntimeOptions;
  } = {},
) => {
  const lines: string[] = [];
  const blobDir = await Deno.makeTempDir({ prefix: "chartlog_blobs_" });
  const removeBlobs = () => Deno.remove(blobDir, { recursive: true }).catch(() => {});
  let config: Config;
  let log: Logger;
  let runtime: Runtime | null;
  try {
    config = loadConfig({
      CHARTLOG_BLOB_DIR: blobDir,
      DATABASE_URL: "memory://",
      CHARTLOG_MASTER_KEY: btoa(
        String.fromCharCode(...crypto.getRandomValues(new Uint8Array(32))),
      ),
      CHARTLOG_CHECKPOINT_KEY: TEST_CHECKPOINT_KEY,
      LOG_LEVEL: "debug",
      // cheap password hashes (src/auth/password.ts); a test may still ask for another env
      CHARTLOG_ENV: "test",
      // tests of other things log admins in without a second factor
      CHARTLOG_MFA_REQUIRED_ROLES: "none",
      ...env,
    });
    log = createLogger(config.logLevel, { write: (l: string) => void lines.push(l) });
    const inMemory = config.database.kind === "pglite" && config.database.dataDir === "memory://";
    runtime = await openRuntime(config, log, {
      workers: opts.workers ?? false,
      now: opts.now,
      outbox: opts.outbox,
      database: inMemory ? await openMigratedPglite("app") : undefined,
    });
  } catch (err) {
    await removeBlobs(); // a refused configuration leaves no temporary directory behind
    throw err;
  }
  const app = createApp({
    config,
    log,
    runtime: () => {
      if (!runtime) throw new UnavailableError("the database is still opening");
      return runtime;
    },
  });
  const logs: LogCapture = {
    get lines() {
      return lines.map((l) => JSON.parse(l));
    },
    text: () => lines.join(""),
  };
  return {
    app,
    config,
    logs,
    runtime: runtime!,
    /** Simulates the database not yet open. */
    detach: () => (runtime = null),
    close: async () => {
      try {
        await runtime?.close();
      } finally {
        await removeBlobs();
      }
    },
  };
};
