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

const wrap = (sql: Sql, root: postgres.Sql): Db => ({
  kind: "postgres",
  query: async <T>(q: Query) =>
    (await sql.unsafe(q.text, q.values as postgres.ParameterOrJSON<never>[])) as unknown as T[],
  transaction: <T>(fn: (tx: Db) => Promise<T>): Promise<T> => {
    if ("savepoint" in sql) {
      return (sql as postgres.TransactionSql).savepoint((tx) => fn(wrap(tx, root))) as Promise<T>;
    }
    return (sql as postgres.Sql).begin((tx) => fn(wrap(tx, root))) as Promise<T>;
  },
  exec: async (text: string) => {
    await sql.unsafe(text);
  },
  reserve: async () => {
    const reserved = await root.reserve();
    return { ...wrap(reserved, root), release: () => Promise.resolve(reserved.release()) };
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
  return wrap(root, root);
};

export type { ReservedDb };
