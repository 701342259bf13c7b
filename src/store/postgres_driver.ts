import postgres from "postgres";
import type { Db, ReservedDb } from "./db.ts";
import type { Query } from "./sql.ts";

type Sql = postgres.Sql | postgres.TransactionSql | postgres.ReservedSql;

export interface PostgresOptions {
  max?: number;
  /**
   * The snapshot-xmin horizon that log readers wait on is cluster-wide: one
   * transaction left open anywhere holds every reader back. Sessions that sit
   * idle inside a transaction longer than this are killed by the server.
   */
  idleInTransactionTimeoutMs?: number;
}

type Mode = "pool" | "transaction" | "reserved";

const wrap = (sql: Sql, root: postgres.Sql, mode: Mode, depth = 0): Db => ({
  kind: "postgres",
  // a plain array: postgres.js' Result subclass carries query text and parameters
  query: async <T>(q: Query) =>
    Array.from(
      await sql.unsafe(q.text, q.values as postgres.ParameterOrJSON<never>[], { prepare: true }),
    ) as T[],
  batch: async (queries: readonly Query[]) => {
    const run = (q: Query) =>
      sql.unsafe(q.text, q.values as postgres.ParameterOrJSON<never>[], { prepare: true })
        .then((rows) => Array.from(rows) as Record<string, unknown>[]);
    if (mode === "pool") {
      // separate statements on a pool could land on different connections
      const out: Record<string, unknown>[][] = [];
      for (const q of queries) out.push(await run(q));
      return out;
    }
    // issued without waiting: postgres.js pipelines them on this connection
    return await Promise.all(queries.map(run));
  },
  transaction: async <T>(fn: (tx: Db) => Promise<T>): Promise<T> => {
    if (mode === "pool") {
      return await (sql as postgres.Sql).begin((tx) => fn(wrap(tx, root, "transaction"))) as T;
    }
    if (mode === "transaction") {
      return await (sql as postgres.TransactionSql).savepoint((tx) =>
        fn(wrap(tx, root, "transaction"))
      ) as T;
    }
    // a reserved connection has no begin(): drive the transaction by hand
    const open = depth === 0 ? "begin" : `savepoint sp_${depth}`;
    const commit = depth === 0 ? "commit" : `release savepoint sp_${depth}`;
    const rollback = depth === 0 ? "rollback" : `rollback to savepoint sp_${depth}`;
    await sql.unsafe(open);
    try {
      const out = await fn(wrap(sql, root, "reserved", depth + 1));
      await sql.unsafe(commit);
      return out;
    } catch (err) {
      await sql.unsafe(rollback).catch(() => {});
      throw err;
    }
  },
  exec: async (text: string) => {
    await sql.unsafe(text);
  },
  reserve: async () => {
    const reserved = await root.reserve();
    return {
      ...wrap(reserved, root, "reserved"),
      release: () => Promise.resolve(reserved.release()),
    };
  },
  close: () => root.end({ timeout: 5 }),
});

/** A {@link Db} over a postgres.js pool. */
export const openPostgres = (url: string, options: PostgresOptions = {}): Db => {
  const root = postgres(url, {
    max: options.max ?? 10,
    onnotice: () => {},
    connection: {
      application_name: "chartlog",
      idle_in_transaction_session_timeout: options.idleInTransactionTimeoutMs ?? 60_000,
    },
  });
  return wrap(root, root, "pool");
};

export type { ReservedDb };
