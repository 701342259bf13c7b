import { type Config, ConfigError, loadConfig } from "./config.ts";
import { createApp } from "./http/app.ts";
import { Drain } from "./http/drain.ts";
import { createLogger, type Logger } from "./logger.ts";
import { UnavailableError } from "./errors.ts";
import { openRuntime, type Runtime } from "./runtime.ts";
import { runsAsOwner } from "./store/roles.ts";
import { isConnectionError } from "./store/db.ts";
import { installLastResort } from "./last_resort.ts";

/** Start-up retries of an unreachable database: 0.5 s doubling to at most 30 s. */
const RETRY_FIRST_MS = 500;
const RETRY_MAX_MS = 30_000;

const sleep = (ms: number, signal: AbortSignal) =>
  new Promise<void>((resolve) => {
    const t = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => {
      clearTimeout(t);
      resolve();
    }, { once: true });
  });

/**
 * Opens the runtime (database, migrations, workers), retrying with backoff
 * while the database cannot be reached; null when stopped meanwhile. Any
 * other failure ends the process.
 */
const openRuntimeRetrying = async (
  config: Config,
  log: Logger,
  stopping: AbortSignal,
  opts: { claimBlobs?: boolean } = {},
): Promise<Runtime | null> => {
  for (let attempt = 1; !stopping.aborted; attempt++) {
    try {
      const r = await openRuntime(config, log, opts);
      if (stopping.aborted) {
        await r.close();
        return null;
      }
      return r;
    } catch (err) {
      const e = err as { name?: string; code?: string; message?: string };
      if (!isConnectionError(err)) {
        // name and code; the message of a connection error can name the host, never the password
        log.fatal(
          { err: { name: e.name, code: e.code, message: e.message } },
          "cannot start: the database or the blob directory was refused",
        );
        Deno.exit(1);
      }
      const retryInMs = Math.min(RETRY_MAX_MS, RETRY_FIRST_MS * 2 ** (attempt - 1));
      log.warn(
        { attempt, retryInMs, err: { name: e.name, code: e.code } },
        "the database is unreachable; retrying",
      );
      await sleep(retryInMs, stopping);
    }
  }
  return null;
};

/** Says the database is open, and warns when connected as the log's owner. */
const announce = async (config: Config, log: Logger, r: Runtime | null): Promise<void> => {
  if (!r) return;
  log.info({ database: r.db.kind }, "database ready");
  if (await runsAsOwner(r.db).catch(() => false)) {
    log.warn(
      { ownerUrl: config.ownerDatabaseUrl !== null },
      "the server runs as the owner of the log (or a superuser): fine for development and tests, not for production; set CHARTLOG_OWNER_DATABASE_URL for migrations and connect DATABASE_URL as chartlog_app (README: Database roles)",
    );
  }
};

/**
 * `CHARTLOG_HTTP=off`: a worker instance. No listener at all; the runtime's
 * background workers (async projections with the outbox, the checkpoint
 * publisher, the grant sweeper) run as in a server, each taking its advisory
 * lock, so any number of instances share the work with the servers. SIGTERM /
 * SIGINT stop the workers (each finishes its batch) and close the database.
 */
const runWorkersOnly = (config: Config, log: Logger): void => {
  const stopping = new AbortController();
  log.info({ http: "off" }, "no HTTP listener (CHARTLOG_HTTP=off): background workers only");
  // the workers never read or write media blobs: the instance needs no blob directory
  const opening = openRuntimeRetrying(config, log, stopping.signal, { claimBlobs: false })
    .then(async (r) => {
      await announce(config, log, r);
      if (r) {
        log.info({
          projections: r.workers.map((w) => w.projection.name),
          sweeper: r.sweeper !== null,
          publisher: r.publisher !== null,
        }, "workers running");
      }
      return r;
    });
  const shutdown = async (signal: string) => {
    if (stopping.signal.aborted) return;
    stopping.abort();
    log.info({ signal }, "shutting down");
    await (await opening)?.close();
    log.info("stopped");
    Deno.exit(0);
  };
  Deno.addSignalListener("SIGTERM", () => shutdown("SIGTERM"));
  Deno.addSignalListener("SIGINT", () => shutdown("SIGINT"));
};

/**
 * Starts the HTTP server (or, with `CHARTLOG_HTTP=off`, only the workers:
 * {@link runWorkersOnly}). The database is opened after the listener, and
 * retried with backoff while it cannot be reached (a container may start
 * before its database): meanwhile `/health` answers 200 and everything else
 * 503. SIGTERM / SIGINT stop accepting connections, let in-flight requests
 * finish (at most CHARTLOG_SHUTDOWN_TIMEOUT_S), stop projection workers and
 * close the database.
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
  installLastResort(log);
  if (!config.http) return runWorkersOnly(config, log);
  let runtime: Runtime | null = null;
  const drain = new Drain();
  const app = createApp({
    config,
    log,
    drain,
    runtime: () => {
      if (!runtime) throw new UnavailableError("the database is still opening");
      return runtime;
    },
  });
  const stopping = new AbortController();
  let server: Deno.HttpServer;
  try {
    server = Deno.serve({
      port: config.port,
      hostname: config.hostname,
      onListen: ({ hostname, port }) => log.info({ hostname, port }, "chartlog listening"),
    }, (req, info) => {
      // `info` is Hono's env: getConnInfo reads the client address from it
      const res = Promise.resolve(app.fetch(req, info));
      // `completed` settles at shutdown even for a handler still at work: wait for both
      drain.track(Promise.allSettled([res, info.completed]));
      return res;
    });
  } catch (err) {
    if (!(err instanceof Deno.errors.AddrInUse)) throw err;
    log.fatal({ port: config.port }, "the port is in use (another server?); set PORT to another");
    Deno.exit(1);
  }

  const opening = openRuntimeRetrying(config, log, stopping.signal).then(async (r) => {
    runtime = r;
    await announce(config, log, r);
    return r;
  });

  const shutdown = async (signal: string) => {
    if (stopping.signal.aborted) return;
    stopping.abort();
    log.info({ signal, timeoutSec: config.shutdownTimeoutSec }, "shutting down");
    const deadline = new Promise<false>((r) =>
      setTimeout(() => r(false), config.shutdownTimeoutSec * 1000)
    );
    // New requests are refused (503) from now on. Deno's shutdown() closes the listener and
    // lets handlers finish, but cuts off bodies still arriving: wait for those first.
    drain.draining = true;
    const drained = await Promise.race([
      (async () => {
        await drain.whenReceived();
        await server.shutdown();
        await drain.whenDelivered();
        return true;
      })(),
      deadline,
    ]);
    if (!drained) log.warn("requests still in flight at the shutdown deadline");
    await (await opening)?.close();
    log.info("stopped");
    Deno.exit(0);
  };
  Deno.addSignalListener("SIGTERM", () => shutdown("SIGTERM"));
  Deno.addSignalListener("SIGINT", () => shutdown("SIGINT"));
};

if (import.meta.main) main();
