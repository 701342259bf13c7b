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

const alive = (pid: number): boolean => {
  try {
    Deno.statSync(`/proc/${pid}`);
    return true;
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) {
      try {
        Deno.statSync("/proc/self");
        return false; // /proc works and the process is gone
      } catch {
        return true; // no /proc here: cannot tell, assume it runs
      }
    }
    return true;
  }
};

/**
 * PGlite does not lock its data directory, and two processes writing one
 * directory corrupt it. This lock file beside the directory (holding the
 * owner's pid) refuses a second process; a stale one (its process is gone,
 * e.g. after a crash) is taken over.
 */
const lockDataDir = async (dataDir: string): Promise<() => Promise<void>> => {
  const path = `${dataDir.replace(/\/+$/, "")}.lock`;
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      await Deno.writeTextFile(path, `${Deno.pid}\n`, { createNew: true });
      return async () => {
        await Deno.remove(path).catch(() => {});
      };
    } catch (err) {
      if (!(err instanceof Deno.errors.AlreadyExists)) throw err;
      const pid = Number((await Deno.readTextFile(path).catch(() => "")).trim());
      if (pid && alive(pid)) {
        throw new Error(
          `the embedded database ${dataDir} is in use by process ${pid}: stop it first ` +
            `(on PostgreSQL, commands run alongside the server)`,
        );
      }
      await Deno.remove(path).catch(() => {}); // stale: its owner is gone
    }
  }
  throw new Error(`cannot lock ${dataDir}`);
};

/**
 * A {@link Db} over an embedded PGlite: `memory://` for an in-memory
 * database, otherwise a data directory path (locked to this process).
 */
export const openPglite = async (dataDir: string): Promise<Db> => {
  if (dataDir === "memory://") {
    const pg = await PGlite.create();
    return wrap(pg, pg, 0);
  }
  const unlock = await lockDataDir(dataDir);
  try {
    const pg = await PGlite.create(dataDir);
    const db = wrap(pg, pg, 0);
    return {
      ...db,
      close: async () => {
        await db.close();
        await unlock();
      },
    };
  } catch (err) {
    await unlock();
    throw err;
  }
};
