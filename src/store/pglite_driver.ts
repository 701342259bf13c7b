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
/** Locks `dataDir`; the function returned unlocks it (once: later calls do nothing). */
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
  let locked = true;
  return async () => {
    if (!locked) return;
    locked = false;
    await file.truncate(0).catch(() => {});
    file.close(); // releases the lock
  };
};

/**
 * Runs `prepare` on a fresh in-memory PGlite and returns its data directory
 * as a tarball, for {@link openPgliteImage}. Tests make one migrated image
 * per process: initdb is most of a fresh PGlite's start-up (seconds).
 */
export const pgliteImage = async (
  prepare: (db: Db) => Promise<void>,
): Promise<Uint8Array<ArrayBuffer>> => {
  const pg = await PGlite.create(createOptions());
  try {
    await prepare(wrap(pg, pg, 0));
    // A running instance's directory: each open recovers it as after a crash,
    // replaying the WAL from the last checkpoint, which was all of `prepare`'s
    // (1.5 MB of it for the app's image: 0.39 against 0.31 s of CPU an open).
    await pg.exec("checkpoint");
    // uncompressed (40 MB; 4.7 MB as gzip): unzipping was a third of each
    // open's CPU time, about 300 ms
    return new Uint8Array(await (await pg.dumpDataDir("none")).arrayBuffer());
  } finally {
    await pg.close();
  }
};

/**
 * An image's bytes as the Blob PGlite's `loadDataDir` takes, read back as a
 * copy of a buffer: Deno's own Blob reads 40 MB back in small parts, about
 * 300 ms of CPU an open.
 */
class BytesBlob extends Blob {
  readonly #bytes: Uint8Array<ArrayBuffer>;
  constructor(bytes: Uint8Array<ArrayBuffer>) {
    super();
    this.#bytes = bytes;
  }
  override get size(): number {
    return this.#bytes.byteLength;
  }
  override arrayBuffer(): Promise<ArrayBuffer> {
    return Promise.resolve(this.#bytes.slice().buffer);
  }
}

/**
 * An in-memory PGlite started from a copy of an image made by
 * {@link pgliteImage} (its bytes; the image itself is never changed), with
 * `sharedBuffers` as its buffer pool when given (the pool is zeroed at each
 * start: see {@link PGLITE_START_PARAMS}).
 */
export const openPgliteImage = async (
  image: Uint8Array<ArrayBuffer>,
  opts: { sharedBuffers?: string } = {},
): Promise<Db> => {
  const options = createOptions();
  if (opts.sharedBuffers) options.startParams.push("-c", `shared_buffers=${opts.sharedBuffers}`);
  const pg = await PGlite.create({ ...options, loadDataDir: new BytesBlob(image) });
  return wrap(pg, pg, 0);
};

const exists = async (path: string): Promise<boolean> => {
  try {
    await Deno.stat(path);
    return true;
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return false;
    throw err;
  }
};

/**
 * The file beside a data directory that says its initdb began and has not
 * finished. PostgreSQL writes PG_VERSION first: without it, a first start
 * interrupted mid-initdb (Ctrl-C, a crash, a full disk) would leave a
 * directory the next start takes for a database.
 */
const initMarker = (dataDir: string) => `${dataDir.replace(/\/+$/, "")}.initdb`;

/**
 * Whether `dataDir` holds a whole database: PG_VERSION, and no initdb of
 * ours begun there and not finished (see {@link initMarker}).
 */
const initialised = async (dataDir: string): Promise<boolean> =>
  !(await exists(initMarker(dataDir))) &&
  await exists(`${dataDir.replace(/\/+$/, "")}/PG_VERSION`);

/** Whether `dir` is missing or holds nothing. */
const emptyOrMissing = async (dir: string): Promise<boolean> => {
  try {
    for await (const _ of Deno.readDir(dir)) return false;
    return true;
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return true;
    throw err;
  }
};

/** WASI's numbers (Emscripten's file system errors) for what initdb may meet on a bad directory. */
const ERRNO: Record<number, string> = {
  2: "EACCES: permission denied",
  20: "EEXIST: file exists",
  28: "EINVAL: invalid argument",
  31: "EISDIR: is a directory",
  44: "ENOENT: no such file or directory",
  51: "ENOSPC: no space left on device",
  54: "ENOTDIR: not a directory",
  55: "ENOTEMPTY: directory not empty",
  63: "EPERM: operation not permitted",
  69: "EROFS: read-only file system",
};

/** A readable cause: PGlite's file system throws `{ name: "ErrnoError", errno }`, not an Error. */
const describe = (err: unknown): string => {
  if (err instanceof Error) return err.message;
  const errno = (err as { errno?: unknown } | null)?.errno;
  if (typeof errno === "number") return ERRNO[errno] ?? `file system error ${errno}`;
  return String(err);
};

/**
 * Initialises `dataDir` unless it already holds a database: under its lock,
 * so a server starting meanwhile is refused rather than sharing the
 * directory (see {@link openPglite}). Runs in src/store/pglite_init_child.ts
 * or src/store/pglite_init_worker.ts, never in the server's own isolate.
 */
export const initDataDir = async (dataDir: string): Promise<void> => {
  const unlock = await lockDataDir(dataDir);
  try {
    const marker = initMarker(dataDir);
    if (await exists(marker)) {
      // An earlier initdb here did not finish. What it left is no database,
      // but this never deletes a directory: it may hold someone's files.
      if (!(await emptyOrMissing(dataDir))) {
        throw new Error(
          `the embedded database in ${dataDir} was never fully initialised (an earlier first ` +
            `start was interrupted or failed); it holds no data yet: remove that directory ` +
            `and start again`,
        );
      }
    } else if (await initialised(dataDir)) return;
    await Deno.writeTextFile(marker, `initdb began ${new Date().toISOString()}\n`);
    try {
      const pg = await PGlite.create(dataDir, createOptions());
      await pg.close();
    } catch (err) {
      throw new Error(
        `could not initialise the embedded database in ${dataDir}: ${describe(err)}`,
        { cause: err },
      );
    }
    await Deno.remove(marker);
  } finally {
    await unlock();
  }
};

/** What the init child prints and the init Worker posts: done, or the failure (an empty database: no PHI). */
export type InitReply = { ok: true } | { ok: false; name: string; message: string };

/** An {@link InitReply} for the outcome of {@link initDataDir}. */
export const initReply = async (dataDir: string): Promise<InitReply> => {
  try {
    await initDataDir(dataDir);
    return { ok: true };
  } catch (err) {
    return { ok: false, name: err instanceof Error ? err.name : "Error", message: describe(err) };
  }
};

const throwReply = (reply: InitReply) => {
  if (reply.ok) return;
  const err = new Error(reply.message);
  err.name = reply.name;
  throw err;
};

/**
 * The Deno executable this process may run: its own, or `deno` on the PATH
 * (what `--allow-run=deno` grants: Deno resolves that name without following
 * symlinks, so it rarely matches the running executable's path). Null
 * without the permission (the CLI tasks), or when this module is not a
 * local file (a child could not import it).
 */
const runnableDeno = (): string | null => {
  if (!import.meta.url.startsWith("file:")) return null;
  for (const command of [Deno.execPath(), "deno"]) {
    if (Deno.permissions.querySync({ name: "run", command }).state === "granted") return command;
  }
  return null;
};

/**
 * Initialises `dataDir` in a child Deno process (src/store/pglite_init_child.ts)
 * that may read, and write nothing but the directory and its lock file. All
 * that initdb used (a second, in-memory PGlite and the initdb module, 500 MB
 * at its peak) goes back to the OS when the child exits: a Worker's does not
 * all (denoland/deno#26058). False when no child could be started.
 */
const initInChild = async (command: string, dataDir: string): Promise<boolean> => {
  const child = new URL("./pglite_init_child.ts", import.meta.url).pathname;
  const dir = dataDir.replace(/\/+$/, "");
  let out: Deno.CommandOutput;
  try {
    out = await new Deno.Command(command, {
      args: [
        "run",
        "--no-prompt",
        "--allow-read",
        `--allow-write=${dir},${dir}.lock,${initMarker(dir)}`,
        child,
        dir,
      ],
      env: { NO_COLOR: "1" },
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).output();
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return false;
    throw err;
  }
  const stdout = new TextDecoder().decode(out.stdout).trim().split("\n").at(-1) ?? "";
  let reply: InitReply | null = null;
  try {
    reply = JSON.parse(stdout);
  } catch {
    // no reply: the child failed before it could answer
  }
  if (reply && typeof reply === "object" && "ok" in reply) {
    throwReply(reply);
    return true;
  }
  const stderr = new TextDecoder().decode(out.stderr).trim().split("\n").slice(-5).join("\n");
  throw new Error(`the PGlite initdb process exited with ${out.code}: ${stderr || stdout}`);
};

/**
 * Initialises `dataDir` on a Worker that ends afterwards (see
 * src/store/pglite_init_worker.ts): when no child process may be started.
 * Deno keeps part of an ended Worker's memory: the idle server is about 100 MB larger.
 */
const initInWorker = async (dataDir: string): Promise<void> => {
  const worker = new Worker(new URL("./pglite_init_worker.ts", import.meta.url), {
    type: "module",
  });
  try {
    throwReply(
      await new Promise<InitReply>((resolve, reject) => {
        worker.onmessage = (e: MessageEvent<InitReply>) => resolve(e.data);
        worker.onerror = (e) => {
          e.preventDefault();
          reject(new Error(`the PGlite initdb worker failed: ${e.message}`));
        };
        worker.postMessage(dataDir);
      }),
    );
  } finally {
    worker.terminate();
  }
};

/**
 * Initialises a new `dataDir` outside this isolate, whose heap would keep
 * initdb's 300 MB: in a child process when this one may run `deno` (the
 * `start` task), else on a Worker. Says which.
 */
export const initOutside = async (dataDir: string): Promise<"child" | "worker"> => {
  const command = runnableDeno();
  if (command && await initInChild(command, dataDir)) return "child";
  await initInWorker(dataDir);
  return "worker";
};

/**
 * A {@link Db} over an embedded PGlite: `memory://` for an in-memory
 * database, otherwise a data directory path (locked to this process).
 *
 * A new directory is initialised by {@link initOutside}, and the lock is
 * handed over: released here, taken by the initialiser (which checks again,
 * under it, whether the directory is still new), released when it is done,
 * and taken here again. A server starting meanwhile on the same directory
 * either finds it locked and stops, or takes it and then this one stops:
 * never two writers, not even with a child left running by a server killed
 * mid-initdb (it holds the lock until it ends).
 */
export const openPglite = async (dataDir: string): Promise<Db> => {
  if (dataDir === "memory://") {
    const pg = await PGlite.create(createOptions());
    return wrap(pg, pg, 0);
  }
  let unlock = await lockDataDir(dataDir);
  try {
    if (!(await initialised(dataDir))) {
      await unlock();
      await initOutside(dataDir);
      unlock = await lockDataDir(dataDir);
    }
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
