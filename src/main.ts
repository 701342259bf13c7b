import { ConfigError, loadConfig } from "./config.ts";
import { createApp } from "./http/app.ts";
import { createLogger } from "./logger.ts";
import { UnavailableError } from "./errors.ts";
import { openRuntime, type Runtime } from "./runtime.ts";

/**
 * Starts the HTTP server. SIGTERM / SIGINT stop accepting connections, let
 * in-flight requests finish, stop projection workers and close the database.
 */
const main = (): void => {
  let config;
  try {
    config = loadConfig(Deno.env.toObject());
  } catch (err) {
    if (err instanceof ConfigError) {
      console.error(err.message);
      Deno.exit(1);
    }
    throw err;
  }
  const log = createLogger(config.logLevel);
  // Listen first, open the database after: liveness answers at once, while
  // readiness (and every data route) answers 503 until migrations are done.
  let runtime: Runtime | null = null;
  const app = createApp({
    config,
    log,
    runtime: () => {
      if (!runtime) throw new UnavailableError("the database is still opening");
      return runtime;
    },
  });
  const abort = new AbortController();
  const server = Deno.serve({
    port: config.port,
    hostname: config.hostname,
    signal: abort.signal,
    onListen: ({ hostname, port }) => log.info({ hostname, port }, "chartlog listening"),
  }, app.fetch);
  const opening = openRuntime(config, log).then((r) => {
    runtime = r;
    log.info({ database: r.db.kind }, "database ready");
    return r;
  }).catch((err) => {
    log.fatal(
      { err: { name: err?.name, code: err?.code, message: err?.message } },
      "cannot open the database",
    );
    Deno.exit(1);
  });

  let stopping = false;
  const shutdown = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, "shutting down");
    abort.abort();
    await server.finished;
    await (await opening).close();
    log.info("stopped");
    Deno.exit(0);
  };
  Deno.addSignalListener("SIGTERM", () => shutdown("SIGTERM"));
  Deno.addSignalListener("SIGINT", () => shutdown("SIGINT"));
};

if (import.meta.main) main();
