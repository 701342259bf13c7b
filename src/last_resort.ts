import type { Logger } from "./logger.ts";
import { isConnectionError } from "./store/db.ts";

/** What is logged of an error nobody caught: never its message (a driver's can quote row values). */
const described = (err: unknown) => {
  const e = (err ?? {}) as { name?: unknown; code?: unknown; stack?: unknown };
  return {
    name: typeof e.name === "string" ? e.name : typeof err,
    code: typeof e.code === "string" ? e.code : undefined,
    // the frames only: the stack's first line is the message
    frames: typeof e.stack === "string"
      ? e.stack.split("\n").filter((l) => l.trimStart().startsWith("at ")).slice(0, 12)
        .map((l) => l.trim())
      : undefined,
  };
};

/**
 * The server's last resort for a failure no code awaited or caught (Deno's
 * default ends the process and prints the error, message and all, to
 * stderr).
 *
 * - A rejection with a database connection error (the database went away
 *   under a promise nobody awaits, e.g. inside the driver) is logged as a
 *   warning and the process carries on: the request that needed the
 *   database has failed with a 503 of its own, and the pool reconnects.
 * - Anything else is a bug: it is logged as fatal, with its name, code and
 *   stack frames but never its message, and the process exits with status 1
 *   for its supervisor to restart it, as before.
 */
export const installLastResort = (
  log: Logger,
  exit: (code: number) => void = (code) => Deno.exit(code),
): void => {
  globalThis.addEventListener("unhandledrejection", (e) => {
    e.preventDefault();
    if (isConnectionError(e.reason)) {
      log.warn(
        { err: described(e.reason) },
        "a database connection error nobody awaited; carrying on",
      );
      return;
    }
    log.fatal({ err: described(e.reason) }, "unhandled rejection: exiting");
    exit(1);
  });
  globalThis.addEventListener("error", (e) => {
    e.preventDefault();
    log.fatal({ err: described(e.error) }, "uncaught exception: exiting");
    exit(1);
  });
};
