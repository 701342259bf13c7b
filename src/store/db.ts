import { UnavailableError } from "../errors.ts";
import type { Query } from "./sql.ts";

/**
 * The database port both drivers implement: parameterised queries,
 * transactions, a reserved session (for session-level advisory locks) and
 * multi-statement DDL for migrations.
 *
 * Parameters bind the same way on both drivers: a `Date` as timestamptz
 * (exact to the millisecond), an object or array where the statement wants
 * json or jsonb (`${doc}::jsonb`; any value there is JSON-encoded, a string
 * too), other values as text for the server to read. A timestamp held as a
 * string goes through `::text::timestamptz`: postgres.js would parse it
 * with JavaScript's `Date` (dropping microseconds), PGlite would not.
 */
export interface Db {
  readonly kind: "postgres" | "pglite";
  query<T = Record<string, unknown>>(q: Query): Promise<T[]>;
  /**
   * Runs the statements in order and returns each one's rows. Inside a
   * transaction or on a reserved connection, postgres.js sends them together
   * (one network round trip); the server still executes them one after the
   * other, each with its own snapshot. If one fails, the batch rejects.
   */
  batch(queries: readonly Query[]): Promise<Record<string, unknown>[][]>;
  /** Runs `fn` in one transaction; rolls back if it throws. */
  transaction<T>(fn: (tx: Db) => Promise<T>): Promise<T>;
  /** Runs several statements without parameters (migrations, projection DDL). */
  exec(text: string): Promise<void>;
  /** A connection of its own, for session state such as advisory locks. */
  reserve(): Promise<ReservedDb>;
  close(): Promise<void>;
}

export interface ReservedDb extends Db {
  release(): Promise<void>;
}

/** Postgres error code, whichever driver raised it. */
export const pgCode = (err: unknown): string | undefined => {
  const e = err as { code?: unknown } | null;
  return typeof e?.code === "string" ? e.code : undefined;
};

/**
 * The constraint a violation names, whichever driver raised it: postgres.js
 * calls the field `constraint_name`, PGlite `constraint`. Violations are told
 * apart by this, never by message text, which quotes other names and values.
 */
export const pgConstraint = (err: unknown): string | undefined => {
  const e = err as { constraint_name?: unknown; constraint?: unknown } | null;
  const name = e?.constraint_name ?? e?.constraint;
  return typeof name === "string" ? name : undefined;
};

/** postgres.js and Node socket codes of a connection that failed or was lost. */
const CONNECTION_CODES = new Set([
  "CONNECTION_CLOSED",
  "CONNECTION_ENDED",
  "CONNECTION_DESTROYED",
  "CONNECT_TIMEOUT",
  "ECONNREFUSED",
  "ECONNRESET",
  "EPIPE",
  "ETIMEDOUT",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "ENOTFOUND",
  "EAI_AGAIN",
]);

/**
 * Whether an error says the database cannot be reached (rather than that a
 * statement failed): a refused or lost connection, an administrator or crash
 * shutdown (57P0x), too many connections (53300), any connection exception
 * (class 08), or a closed PGlite.
 */
export const isConnectionError = (err: unknown): boolean => {
  if (err instanceof UnavailableError) return true;
  const code = pgCode(err);
  if (code) {
    return CONNECTION_CODES.has(code) || /^(08|57P0)/.test(code) || code === "53300";
  }
  return err instanceof Error && err.message === "PGlite is closed";
};

/**
 * The one place a driver error becomes {@link UnavailableError} (HTTP 503):
 * connection errors are mapped, anything else is returned unchanged.
 */
export const mapConnectionError = (err: unknown): unknown =>
  err instanceof UnavailableError || !isConnectionError(err)
    ? err
    : new UnavailableError("the database is unreachable", { code: pgCode(err) });
