import { PGlite, type Transaction } from "@electric-sql/pglite";
import { type Db, mapConnectionError } from "./db.ts";
import type { Query } from "./sql.ts";

type Conn = PGlite | Transaction;

/**
 * PGlite's start parameters with a smaller buffer pool. initdb sizes
 * shared_buffers at PostgreSQL's 128 MB, and in WASM the pool is zeroed in
 * the instance's heap at start, so all of it is resident from the first
 * second: PGlite alone on an existing directory held 300 MB, 175 MB with 32
 * MB, and the idle server restarted on its directory 364 MB before, 245 MB
 * with 32 MB and 224-244 MB with 16 MB (measured; tests/bench/memory_bench.ts).
 * A page outside the pool is a read of the data directory through the OS
 * page cache: random primary-key reads over a 42 MB table ran at the same
 * rate with 16, 32 and 128 MB (1,750-2,630 lookups/s, noise between runs
 * larger than between sizes). wal_buffers follows (1/32 of it).
 */
export const PGLITE_START_PARAMS: readonly string[] = [
  ...PGlite.defaultStartParams,
  "-c",
  "shared_buffers=16MB",
];

/**
 * initdb's own: the same pool while it bootstraps (it would size one of 128
 * MB), and written into a new directory's postgresql.conf.
 */
const PGLITE_INITDB_PARAMS: readonly string[] = ["-c", "shared_buffers=16MB"];

const createOptions = () => ({
  startParams: [...PGLITE_START_PARAMS],
  initDbStartParams: [...PGLITE_INITDB_PARAMS],
});

/**
 * JSON-encode every json (114) and jsonb (3802) parameter, as postgres.js
 * does: PGlite would pass a string through as JSON text, not as a JSON string.
 */
const QUERY_OPTIONS = { serializers: { 114: JSON.stringify, 3802: JSON.stringify } };

const rethrow = (err: unknown): never => {
  throw mapConnectionError(err);
};

const wrap = (conn: Conn, root: PGlite, depth: number): Db => ({
  kind: "pglite",
  query: async <T>(q: Query) =>
    (await conn.query<T>(q.text, q.values as unknown[], QUERY_OPTIONS).catch(rethrow)).rows as T[],
  batch: async (queries: readonly Query[]) => {
    const out: Record<string, unknown>[][] = [];
    for (const q of queries) {
      out.push(
        (await conn.query<Record<string, unknown>>(q.text, q.values as unknown[], QUERY_OPTIONS)
          .catch(rethrow)).rows,
      );
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
    await conn.exec(text).catch(rethrow);
  },
  // PGlite is a single session: a reserved connection is the database itself.
  reserve: () => Promise.resolve({ ...wrap(root, root, 0), release: () => Promise.resolve() }),
  close: () => root.close(),
});

/**
 * PGlite does not lock its data directory, and two processes writing one
 * directory corrupt it. An exclusive OS lock (flock) on a file beside the
 * directory refuses a second process. The kernel drops the lock when its
 * process dies, however it dies, so nothing is ever stale: no pid check
 * (which needs /proc, refused under the task's permissions, and misfires
 * when a restarted container reuses the pid). The file holds the owner's pid
 * for humans only and is emptied, never deleted: deleting it would let a
 * process that opened the old file and one that creates a new one both lock.
 */
const lockDataDir = async (dataDir: string): Promise<() => Promise<void>> => {
  const path = `${dataDir.replace(/\/+$/, "")}.lock`;
  const file = await Deno.open(path, { read: true, write: true, create: true });
  try {
    if (!(await file.tryLock(true))) {
      const pid = (await Deno.readTextFile(path).catch(() => "")).trim();
      throw new Error(
        `the embedded database ${dataDir} is in use by another process` +
          `${/^\d+$/.test(pid) ? ` (pid ${pid})` : ""}: stop it first ` +
          `(on PostgreSQL, commands run alongside the server)`,
      );
    }
    await file.truncate(0);
    await file.write(new TextEncoder().encode(`${Deno.pid}\n`));
  } catch (err) {
    file.close();
    throw err;
  }
  return async () => {
    await file.truncate(0).catch(() => {});
    file.close(); // releases the lock
  };
};

/**
 * Runs `prepare` on a fresh in-memory PGlite and returns its data directory
 * as a tarball, for {@link openPgliteImage}. Tests make one migrated image
 * per process: initdb is most of a fresh PGlite's start-up (seconds).
 */
export const pgliteImage = async (prepare: (db: Db) => Promise<void>): Promise<Blob> => {
  const pg = await PGlite.create(createOptions());
  try {
    await prepare(wrap(pg, pg, 0));
    // gzip: a tenth of the size (40 MB raw) and no slower to load
    return await pg.dumpDataDir("gzip");
  } finally {
    await pg.close();
  }
};

/** An in-memory PGlite started from a copy of an image made by {@link pgliteImage}. */
export const openPgliteImage = async (image: Blob): Promise<Db> => {
  const pg = await PGlite.create({ ...createOptions(), loadDataDir: image });
  return wrap(pg, pg, 0);
};

/** Whether `dataDir` already holds a database (PostgreSQL writes PG_VERSION first). */
const initialised = async (dataDir: string): Promise<boolean> => {
  try {
    await Deno.stat(`${dataDir.replace(/\/+$/, "")}/PG_VERSION`);
    return true;
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return false;
    throw err;
  }
};

/** A message to src/store/pglite_init_worker.ts: the data directory and PGlite's start parameters. */
export interface InitRequest {
  dataDir: string;
  startParams: string[];
  initDbStartParams: string[];
}

/** Its answer: done, or the failure's name and message (an empty database: no PHI). */
export type InitReply = { ok: true } | { ok: false; name: string; message: string };

/**
 * Runs initdb on `dataDir` in a Worker that ends afterwards (see
 * src/store/pglite_init_worker.ts): a first start then holds what a restart
 * holds, not 300 MB more.
 */
const initInWorker = async (dataDir: string): Promise<void> => {
  const worker = new Worker(new URL("./pglite_init_worker.ts", import.meta.url), {
    type: "module",
  });
  try {
    const reply = await new Promise<InitReply>((resolve, reject) => {
      worker.onmessage = (e: MessageEvent<InitReply>) => resolve(e.data);
      worker.onerror = (e) => {
        e.preventDefault();
        reject(new Error(`the PGlite initdb worker failed: ${e.message}`));
      };
      worker.postMessage({ dataDir, ...createOptions() } satisfies InitRequest);
    });
    if (!reply.ok) {
      const err = new Error(reply.message);
      err.name = reply.name;
      throw err;
    }
  } finally {
    worker.terminate();
  }
};

/**
 * A {@link Db} over an embedded PGlite: `memory://` for an in-memory
 * database, otherwise a data directory path (locked to this process). A new
 * directory is initialised on a Worker first.
 */
export const openPglite = async (dataDir: string): Promise<Db> => {
  if (dataDir === "memory://") {
    const pg = await PGlite.create(createOptions());
    return wrap(pg, pg, 0);
  }
  const unlock = await lockDataDir(dataDir);
  try {
    if (!(await initialised(dataDir))) await initInWorker(dataDir);
    const pg = await PGlite.create(dataDir, createOptions());
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
