import type { Query } from "./sql.ts";

/**
 * The database port both drivers implement: parameterised queries,
 * transactions, a reserved session (for session-level advisory locks) and
 * multi-statement DDL for migrations.
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
