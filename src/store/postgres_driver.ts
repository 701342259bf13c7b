import net from "node:net";
import { setImmediate } from "node:timers";
import postgres from "postgres";
import { UnavailableError } from "../errors.ts";
import { type Db, isConnectionError, mapConnectionError, type ReservedDb } from "./db.ts";
import type { Query } from "./sql.ts";

export interface PostgresOptions {
  max?: number;
  /**
   * The snapshot-xmin horizon that log readers wait on is cluster-wide: one
   * transaction left open anywhere holds every reader back. Sessions that sit
   * idle inside a transaction longer than this are killed by the server.
   */
  idleInTransactionTimeoutMs?: number;
}

/** Idle sessions kept for the next `reserve()` (appends reserve one per batch). */
const IDLE_SESSIONS = 2;

/** As postgres.js' own `connect_timeout` (which does not cover a socket it is given). */
const CONNECT_TIMEOUT_MS = 30_000;

const rethrow = (err: unknown): never => {
  throw mapConnectionError(err);
};

const run = (sql: postgres.Sql, q: Query) =>
  sql.unsafe(q.text, q.values as postgres.ParameterOrJSON<never>[], {
    prepare: q.prepare !== false,
  })
    // a plain array: postgres.js' Result subclass carries query text and parameters
    .then((rows) => Array.from(rows) as Record<string, unknown>[]);

/**
 * One server session of its own: a postgres.js client of one connection that
 * may open exactly one socket. Session state (advisory locks, an open
 * transaction) lives on that socket, so a lost connection must never be
 * replaced silently, and must never be written to again: postgres.js 3.4.9
 * throws an uncatchable TypeError from a timer when a reserved connection or
 * a `sql.begin` transaction writes after its socket closed (porsager/postgres
 * #1208, #1199). That is why Chartlog uses neither `sql.reserve()` nor
 * `sql.begin()`: a lost session fails every later statement with
 * {@link UnavailableError}, and a reconnect attempt (for a statement that was
 * still queued) is refused instead of running it on a fresh session.
 */
class Session {
  lost = false;
  readonly sql: postgres.Sql;

  constructor(url: string, common: postgres.Options<Record<string, never>>) {
    let sockets = 0;
    this.sql = postgres(url, {
      ...common,
      max: 1,
      max_lifetime: null,
      onclose: () => {
        this.lost = true;
      },
      socket: (o: SocketOptions) => sockets++ > 0 ? deadSocket(lostError()) : connectSocket(o),
    } as postgres.Options<Record<string, never>>);
  }

  /** Runs a statement unless the session is gone; a connection error marks it gone. */
  async do<T>(fn: (sql: postgres.Sql) => Promise<T>): Promise<T> {
    if (this.lost) throw lostError();
    try {
      return await fn(this.sql);
    } catch (err) {
      const mapped = mapConnectionError(err);
      if (mapped instanceof UnavailableError) this.lost = true;
      throw mapped;
    }
  }

  end(): Promise<void> {
    return this.sql.end({ timeout: 0 }).catch(() => {});
  }
}

const lostError = () =>
  new UnavailableError("the database connection was lost", { code: "CONNECTION_CLOSED" });

/** The parsed options postgres.js hands a socket factory. */
interface SocketOptions {
  host: string[];
  port: number[];
  path?: string;
}

/**
 * A socket that never connected: it reports `err`, then a close, as a
 * net.Socket whose connect failed does. postgres.js 3.4.9 handles that
 * (the waiting query fails, the connection is closed and may connect again
 * later); a socket factory that throws or rejects instead leaves the
 * connection neither open nor closed, and every later query on it waits
 * forever: a pool that was refused once while its database restarted never
 * served again. Both events come two macrotasks later: once postgres.js
 * listens, and after its deferred write of the startup message has run
 * (into nothing), for the reason given at {@link connectSocket}.
 */
const deadSocket = (err: unknown): net.Socket => {
  const s = new net.Socket();
  s.write = (() => true) as typeof s.write;
  setImmediate(() =>
    setImmediate(() => {
      s.emit("error", err);
      s.emit("close", true);
    })
  );
  return s;
};

/**
 * Connects a socket for postgres.js (which does not connect a socket it is
 * given), trying each host in turn; when none can be reached, a
 * {@link deadSocket} that reports why. Its `close` event is reported one
 * macrotask late and as clean: postgres.js 3.4.9 batches small writes behind
 * a `setImmediate` and, when the socket closes before that runs, keeps the
 * cancelled timer, so the connection never writes again after reconnecting
 * (it hangs until the connect timeout, again and again); and on a close with
 * an error it does not reject a query written after the error event, which
 * then never settles. Delivered late, the pending write runs first (into the
 * dead socket, harmlessly); delivered as clean, every query still in flight
 * is rejected with CONNECTION_CLOSED.
 */
const connectSocket = async (o: SocketOptions): Promise<net.Socket> => {
  const targets = o.path ? [{ path: o.path }] : o.host.map((host, i) => ({
    host,
    port: o.port[i] ?? o.port[0]!,
  }));
  let last: unknown;
  for (const target of targets) {
    try {
      const s = await new Promise<net.Socket>((resolve, reject) => {
        const s = net.connect(target as net.NetConnectOpts);
        const timer = setTimeout(() => {
          s.destroy();
          reject(Object.assign(new Error("connect timeout"), { code: "CONNECT_TIMEOUT" }));
        }, CONNECT_TIMEOUT_MS);
        s.once("error", (err) => {
          clearTimeout(timer);
          reject(err);
        });
        s.once("connect", () => {
          clearTimeout(timer);
          s.removeAllListeners("error");
          resolve(s);
        });
      });
      // as postgres.js does for its own sockets: TLS takes the server name from here
      if ("host" in target) Object.assign(s, { host: target.host, port: target.port });
      const emit = s.emit.bind(s);
      s.emit = ((event: string | symbol, ...args: unknown[]) =>
        event === "close"
          ? (setImmediate(() =>
            emit("close", false)
          ),
            true)
          : emit(event, ...args)) as typeof s.emit;
      return s;
    } catch (err) {
      last = err;
    }
  }
  return deadSocket(last);
};

/** What postgres.js' array-type query (sent on every new connection) says, as its errors name it. */
const TYPE_FETCH = "from pg_catalog.pg_type a";

/**
 * postgres.js 3.4.9 fetches the array types on each new connection in a
 * query of its own whose promise nothing awaits (`fetchArrayTypes` in its
 * connection.js). When the connection is lost at that moment (a terminated
 * backend, a restart, and then a refused or refused-by-design reconnect)
 * that promise rejects unhandled, and an unhandled rejection ends a Deno
 * process: a server could die of a database blip. The query the caller sent
 * fails with the same error, so nothing is lost by dropping this one copy.
 * Only that rejection is dropped: a connection error that names the type
 * query. Installed once per process by {@link openPostgres}.
 */
let typeFetchGuard = false;
const guardTypeFetch = (): void => {
  if (typeFetchGuard) return;
  typeFetchGuard = true;
  globalThis.addEventListener("unhandledrejection", (e) => {
    const query = (e.reason as { query?: unknown } | null)?.query;
    if (typeof query === "string" && query.includes(TYPE_FETCH) && isConnectionError(e.reason)) {
      e.preventDefault();
    }
  });
};

/**
 * The pool behind `query`, `batch` and `exec`: up to `max` postgres.js
 * clients of one connection each, the most recently used idle one first.
 * postgres.js' own pool hands out its idle connections in turn (first in,
 * first out), so once a burst has opened all of them, even a lone caller's
 * statements go round every backend: each finds its caches cold and is a
 * process of its own to wake. On this project's 2-core VM a sequential
 * append took about twice the time and twice the server CPU once a burst
 * had opened 32 connections (1.1 ms against 0.58 ms), and an audited read
 * at 4 clients, after the 32-client phase of `deno task bench`, twice the
 * server CPU of one on a warm backend. Handed out last in, first out, a
 * few callers keep a few backends busy and warm, and the rest stay idle.
 * When every connection is busy a statement is pipelined on the one with
 * the fewest in flight, as postgres.js would. Each client reconnects on its
 * own after a lost connection, as the connections of postgres.js' pool do.
 * Once ended, it opens nothing more: every later statement fails.
 */
class LifoPool {
  readonly #idle: PoolClient[] = [];
  readonly #all: PoolClient[] = [];
  #ended = false;

  constructor(readonly max: number, readonly open: () => postgres.Sql) {}

  async use<T>(fn: (sql: postgres.Sql) => Promise<T>): Promise<T> {
    if (this.#ended) throw new UnavailableError("the database is closed");
    const c = this.#pick();
    c.busy++;
    try {
      return await fn(c.sql);
    } finally {
      if (--c.busy === 0) this.#idle.push(c);
    }
  }

  #pick(): PoolClient {
    const idle = this.#idle.pop();
    if (idle) return idle;
    if (this.#all.length < this.max) {
      const c = { sql: this.open(), busy: 0 };
      this.#all.push(c);
      return c;
    }
    let least = this.#all[0]!;
    for (const c of this.#all) if (c.busy < least.busy) least = c;
    return least;
  }

  end(timeout: number): Promise<unknown> {
    this.#ended = true;
    return Promise.all(this.#all.map((c) => c.sql.end({ timeout })));
  }
}

interface PoolClient {
  readonly sql: postgres.Sql;
  /** Statements sent and not yet answered. */
  busy: number;
}

/** A {@link ReservedDb} over one session; transactions are driven by hand. */
const sessionDb = (
  session: Session,
  release: () => Promise<void>,
  depth = 0,
): ReservedDb => ({
  kind: "postgres",
  query: async <T>(q: Query) => await session.do((sql) => run(sql, q)) as T[],
  // issued without waiting: postgres.js pipelines them on this connection
  batch: (queries: readonly Query[]) =>
    session.do((sql) => Promise.all(queries.map((q) => run(sql, q)))),
  transaction: async <T>(fn: (tx: Db) => Promise<T>): Promise<T> => {
    const open = depth === 0 ? "begin" : `savepoint sp_${depth}`;
    const commit = depth === 0 ? "commit" : `release savepoint sp_${depth}`;
    const rollback = depth === 0 ? "rollback" : `rollback to savepoint sp_${depth}`;
    await session.do((sql) => sql.unsafe(open));
    try {
      const out = await fn(sessionDb(session, release, depth + 1));
      await session.do((sql) => sql.unsafe(commit));
      return out;
    } catch (err) {
      if (!session.lost) await session.do((sql) => sql.unsafe(rollback)).catch(() => {});
      throw err;
    }
  },
  exec: async (text: string) => {
    await session.do((sql) => sql.unsafe(text));
  },
  reserve: () => Promise.reject(new Error("a reserved connection cannot reserve another")),
  release,
  close: release,
});

/** A {@link Db} over a postgres.js pool, with sessions of their own for `reserve()`. */
export const openPostgres = (url: string, options: PostgresOptions = {}): Db => {
  guardTypeFetch();
  const common = {
    onnotice: () => {},
    connection: {
      application_name: "chartlog",
      idle_in_transaction_session_timeout: options.idleInTransactionTimeoutMs ?? 60_000,
    },
  } as postgres.Options<Record<string, never>>;
  const root = new LifoPool(options.max ?? 10, () =>
    postgres(url, {
      ...common,
      max: 1,
      socket: connectSocket,
    } as postgres.Options<Record<string, never>>));
  const idle: Session[] = [];
  const open = new Set<Session>();
  let closed = false;

  const reserve = (): Promise<ReservedDb> => {
    if (closed) return Promise.reject(new UnavailableError("the database is closed"));
    let session: Session | undefined;
    while ((session = idle.pop()) && session.lost) {
      open.delete(session);
      void session.end();
    }
    if (!session) {
      session = new Session(url, common);
      open.add(session);
    }
    const s = session;
    let released = false;
    return Promise.resolve(sessionDb(s, async () => {
      if (released) return;
      released = true;
      if (!s.lost && !closed && idle.length < IDLE_SESSIONS) {
        idle.push(s);
        return;
      }
      open.delete(s);
      await s.end();
    }));
  };

  return {
    kind: "postgres",
    query: async <T>(q: Query) => await root.use((sql) => run(sql, q)).catch(rethrow) as T[],
    // separate statements on a pool could land on different connections
    batch: async (queries: readonly Query[]) => {
      const out: Record<string, unknown>[][] = [];
      for (const q of queries) out.push(await root.use((sql) => run(sql, q)).catch(rethrow));
      return out;
    },
    transaction: async <T>(fn: (tx: Db) => Promise<T>): Promise<T> => {
      const session = await reserve();
      try {
        return await session.transaction(fn);
      } finally {
        await session.release();
      }
    },
    exec: async (text: string) => {
      await root.use((sql) => sql.unsafe(text)).catch(rethrow);
    },
    reserve,
    close: async () => {
      closed = true;
      await Promise.all([
        root.end(5),
        ...[...open].map((s) => s.sql.end({ timeout: 5 }).catch(() => {})),
      ]);
    },
  };
};

export type { ReservedDb };
