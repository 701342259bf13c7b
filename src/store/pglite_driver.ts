import { PGlite, type Transaction } from "@electric-sql/pglite";
import type { Db } from "./db.ts";
import type { Query } from "./sql.ts";

type Conn = PGlite | Transaction;

const wrap = (conn: Conn, root: PGlite, depth: number): Db => ({
  kind: "pglite",
  query: async <T>(q: Query) => (await conn.query<T>(q.text, q.values as unknown[])).rows as T[],
  batch: async (queries: readonly Query[]) => {
    const out: Record<string, unknown>[][] = [];
    for (const q of queries) {
      out.push((await conn.query<Record<string, unknown>>(q.text, q.values as unknown[])).rows);
    }
    return out;
  },
  transaction: async <T>(fn: (tx: Db) => Promise<T>): Promise<T> => {
    if (conn instanceof PGlite) return await conn.transaction((tx) => fn(wrap(tx, root, 1)));
    // nested: a savepoint inside the open transaction
    const name = `sp_${depth}`;
    await conn.exec(`savepoint ${name}`);
    try {
      const out = await fn(wrap(conn, root, depth + 1));
      await conn.exec(`release savepoint ${name}`);
      return out;
    } catch (err) {
      await conn.exec(`rollback to savepoint ${name}`);
      throw err;
    }
  },
  exec: async (text: string) => {
    await conn.exec(text);
  },
  // PGlite is a single session: a reserved connection is the database itself.
  reserve: () => Promise.resolve({ ...wrap(root, root, 0), release: () => Promise.resolve() }),
  close: () => root.close(),
});

/**
 * A {@link Db} over an embedded PGlite: `memory://` for an in-memory
 * database, otherwise a data directory path.
 */
export const openPglite = async (dataDir: string): Promise<Db> => {
  const pg = dataDir === "memory://" ? await PGlite.create() : await PGlite.create(dataDir);
  return wrap(pg, pg, 0);
};
