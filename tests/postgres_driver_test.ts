/**
 * The PostgreSQL driver when a connection dies at the worst moment: while
 * postgres.js, right after connecting, fetches the array types (a query of
 * its own whose promise nobody awaits). Before the fix the lost connection
 * rejected that promise unhandled, which ends a Deno process: a CI run saw
 * the server exit that way while the availability test terminated backends.
 */
import assert from "node:assert/strict";
import { UnavailableError } from "../src/errors.ts";
import { openPostgres } from "../src/store/postgres_driver.ts";
import { sql } from "../src/store/sql.ts";
import type { Db } from "../src/store/db.ts";
import { PG_ADMIN_URL, postgresAvailable } from "./support/harness.ts";

/**
 * Forwards a local port to PostgreSQL. `down()` stops listening (a connect
 * is refused) and cuts every connection, as a restart would; `up()` listens
 * again on the same port. With `cutAtTypeFetch` it goes down by itself when
 * a client sends postgres.js' array type query (the worst moment).
 */
const pgProxy = (opts: { cutAtTypeFetch?: boolean } = {}) => {
  const target = new URL(PG_ADMIN_URL);
  let listener: Deno.Listener | null = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  const conns = new Set<Deno.Conn>();
  let cuts = 0, cutting = opts.cutAtTypeFetch === true;
  const served: Promise<void>[] = [];
  const down = () => {
    listener?.close();
    listener = null;
    for (const c of conns) {
      try {
        c.close();
      } catch {
        // closed already
      }
    }
    conns.clear();
  };
  const serve = async (l: Deno.Listener) => {
    for await (const client of l) {
      const server = await Deno.connect({
        hostname: target.hostname,
        port: Number(target.port || 5432),
      });
      conns.add(client).add(server);
      void server.readable.pipeTo(client.writable).catch(() => {});
      void (async () => {
        const w = server.writable.getWriter();
        try {
          for await (const chunk of client.readable) {
            if (cutting && new TextDecoder("latin1").decode(chunk).includes("pg_catalog.pg_type")) {
              cutting = false;
              cuts++;
              return down();
            }
            await w.write(chunk);
          }
        } catch {
          // cut
        }
      })();
    }
  };
  served.push(serve(listener).catch(() => {}));
  const url = new URL(PG_ADMIN_URL);
  url.hostname = "127.0.0.1";
  url.port = String(port);
  return {
    url: url.toString(),
    cuts: () => cuts,
    down,
    up: () => {
      listener = Deno.listen({ hostname: "127.0.0.1", port });
      served.push(serve(listener).catch(() => {}));
    },
    close: async () => {
      down();
      await Promise.all(served);
    },
  };
};

/**
 * Queries until the pool answers again, each failure a 503; fails after 50
 * tries, or when a query hangs (a stuck connection never answers at all).
 */
const servesAgain = async (db: Db) => {
  for (let i = 0;; i++) {
    let timer: ReturnType<typeof setTimeout> | undefined;
    try {
      const hung = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error("a query hung")), 30_000);
      });
      assert.deepEqual(await Promise.race([db.query(sql`select 1 as one`), hung]), [{ one: 1 }]);
      return;
    } catch (err) {
      assert.ok(err instanceof UnavailableError, String(err));
      assert.ok(i < 50, "the pool never served again");
      await new Promise((r) => setTimeout(r, 100));
    } finally {
      clearTimeout(timer);
    }
  }
};

/** Lets a rejection nobody handles surface (the test runner fails the test on one). */
const settle = () => new Promise((r) => setTimeout(r, 200));

Deno.test("postgres driver: a reserved session lost while postgres.js fetches its types fails its query with 503, nothing unhandled", async () => {
  if (!(await postgresAvailable())) return;
  const proxy = pgProxy({ cutAtTypeFetch: true });
  const db = openPostgres(proxy.url, { max: 1 });
  try {
    const conn = await db.reserve();
    await assert.rejects(conn.query(sql`select 1`), UnavailableError);
    await conn.release();
    assert.equal(proxy.cuts(), 1);
    await settle();
    proxy.up();
    await servesAgain(db);
  } finally {
    await db.close().catch(() => {});
    await proxy.close();
  }
});

Deno.test("postgres driver: a pooled connection lost while postgres.js fetches its types, then refused, fails its query with 503, nothing unhandled", async () => {
  if (!(await postgresAvailable())) return;
  const proxy = pgProxy({ cutAtTypeFetch: true });
  const db = openPostgres(proxy.url, { max: 1 });
  try {
    await assert.rejects(db.query(sql`select 1`), UnavailableError);
    assert.equal(proxy.cuts(), 1);
    await settle();
    // the pool's one connection is not stuck: it serves once the database is back
    proxy.up();
    await servesAgain(db);
  } finally {
    await db.close().catch(() => {});
    await proxy.close();
  }
});

Deno.test("postgres driver: a pool that lost its database and was refused serves again when it is back", async () => {
  if (!(await postgresAvailable())) return;
  const proxy = pgProxy();
  const db = openPostgres(proxy.url, { max: 1 });
  try {
    await servesAgain(db);
    proxy.down();
    await assert.rejects(db.query(sql`select 1`), UnavailableError); // the cut connection
    await assert.rejects(db.query(sql`select 1`), UnavailableError); // refused
    await settle();
    proxy.up();
    await servesAgain(db);
  } finally {
    await db.close().catch(() => {});
    await proxy.close();
  }
});

Deno.test("postgres driver: the pool hands out its most recently used connection, so a lone caller stays on one backend after a burst opened them all", async () => {
  if (!(await postgresAvailable())) return;
  const db = openPostgres(PG_ADMIN_URL, { max: 4 });
  const pid = async () =>
    Number((await db.query<{ pid: number }>(sql`select pg_backend_pid() as pid`))[0]!.pid);
  try {
    // 12 statements at once on 4 connections: all 4 open, the rest pipelined on them
    const burst = await Promise.all(
      Array.from(
        { length: 12 },
        () => db.query<{ pid: number }>(sql`select pg_backend_pid() as pid, pg_sleep(0.05)`),
      ),
    );
    assert.equal(new Set(burst.map((r) => r[0]!.pid)).size, 4);
    // postgres.js' own pool took its idle connections in turn: these went round all 4
    const lone = new Set<number>();
    for (let i = 0; i < 12; i++) lone.add(await pid());
    assert.equal(lone.size, 1, `a lone caller used ${lone.size} backends`);
    // two callers at a time keep to two of them
    const pair = new Set<number>();
    for (let i = 0; i < 12; i++) (await Promise.all([pid(), pid()])).forEach((p) => pair.add(p));
    assert.equal(pair.size, 2, `two callers used ${pair.size} backends`);
  } finally {
    await db.close();
  }
  // closed, it opens no new connection: a statement fails at once
  await assert.rejects(pid(), UnavailableError);
  const unused = openPostgres(PG_ADMIN_URL, { max: 2 });
  await unused.close();
  await assert.rejects(unused.query(sql`select 1`), UnavailableError);
});
