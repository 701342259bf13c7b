import postgres from "postgres";
import type { Catalog } from "../../src/store/catalog.ts";
import type { Db } from "../../src/store/db.ts";
import { EventStore } from "../../src/store/event_store.ts";
import { subjectKeyShredder } from "../../src/store/shred.ts";
import { migrate } from "../../src/store/migrations.ts";
import { openPglite } from "../../src/store/pglite_driver.ts";
import { openPostgres } from "../../src/store/postgres_driver.ts";
import { PhiCodec } from "../../src/store/phi_codec.ts";
import { setupProjections } from "../../src/store/projection_engine.ts";
import type { Projection } from "../../src/store/types.ts";
import { testCatalog } from "../fixtures/test_events.ts";
import { openMigratedPglite } from "./pglite_image.ts";

export type DriverKind = "postgres" | "pglite";

/** The server tests run against; each test makes its own database on it. */
export const PG_ADMIN_URL = Deno.env.get("TEST_DATABASE_URL") ??
  "postgres://postgres@127.0.0.1:5432/test";

let pgReachable: boolean | undefined;

/**
 * Whether PostgreSQL answers. In CI (CI=true) an unreachable server is a
 * failure, never a silent skip.
 */
export const postgresAvailable = async (): Promise<boolean> => {
  if (pgReachable !== undefined) return pgReachable;
  const admin = postgres(PG_ADMIN_URL, { max: 1, connect_timeout: 3, onnotice: () => {} });
  try {
    await admin`select 1`;
    pgReachable = true;
  } catch (err) {
    if (Deno.env.get("CI") === "true") {
      throw new Error(`PostgreSQL at ${PG_ADMIN_URL} is unreachable in CI: ${err}`);
    }
    console.warn(`PostgreSQL unreachable at ${PG_ADMIN_URL}: its tests are skipped`);
    pgReachable = false;
  } finally {
    await admin.end({ timeout: 1 });
  }
  return pgReachable;
};

/** Drivers to run a contract against: PGlite always, PostgreSQL when reachable. */
export const drivers = async (): Promise<DriverKind[]> =>
  (await postgresAvailable()) ? ["postgres", "pglite"] : ["pglite"];

/** A fresh, uniquely named PostgreSQL database; `drop` removes it. */
export const createTestDatabase = async (): Promise<{ url: string; drop(): Promise<void> }> => {
  const name = `chartlog_test_${crypto.randomUUID().replaceAll("-", "").slice(0, 16)}`;
  const admin = postgres(PG_ADMIN_URL, { max: 1, onnotice: () => {} });
  await admin.unsafe(`create database ${name}`);
  await admin.end();
  const url = new URL(PG_ADMIN_URL);
  url.pathname = `/${name}`;
  return {
    url: url.toString(),
    drop: async () => {
      const a = postgres(PG_ADMIN_URL, { max: 1, onnotice: () => {} });
      await a.unsafe(`drop database if exists ${name} with (force)`);
      await a.end();
    },
  };
};

export interface Harness {
  kind: DriverKind;
  db: Db;
  store: EventStore;
  masterKey: Uint8Array<ArrayBuffer>;
  /** postgres: the database URL; pglite: the data directory. */
  location: string;
  /** Another store on the same database (postgres: its own pool). */
  openStore(opts?: { projections?: readonly Projection[] }): Promise<EventStore>;
  close(): Promise<void>;
}

export interface HarnessOptions {
  catalog?: Catalog;
  projections?: readonly Projection[];
  pgliteDir?: string;
  poolMax?: number;
}

/** A migrated, empty database of the given kind with a store over it. */
export const openHarness = async (
  kind: DriverKind,
  opts: HarnessOptions = {},
): Promise<Harness> => {
  const masterKey = crypto.getRandomValues(new Uint8Array(32));
  const catalog = opts.catalog ?? testCatalog;
  const extra: Db[] = [];
  let db: Db;
  let location: string;
  let cleanup: () => Promise<void>;
  if (kind === "postgres") {
    const tdb = await createTestDatabase();
    location = tdb.url;
    db = openPostgres(tdb.url, { max: opts.poolMax ?? 10 });
    cleanup = tdb.drop;
  } else {
    const dir = opts.pgliteDir ?? "memory://";
    location = dir;
    db = dir === "memory://" ? await openMigratedPglite() : await openPglite(dir);
    cleanup = async () => {};
  }
  await migrate(db);
  const make = async (d: Db, projections: readonly Projection[]) => {
    const codec = new PhiCodec(d, masterKey);
    const store = new EventStore({
      db: d,
      catalog,
      codec,
      shredder: subjectKeyShredder(codec),
      projections,
    });
    await setupProjections(store, projections);
    return store;
  };
  const store = await make(db, opts.projections ?? []);
  return {
    kind,
    db,
    store,
    masterKey,
    location,
    openStore: async (o = {}) => {
      if (kind === "pglite") return await make(db, o.projections ?? opts.projections ?? []);
      const d = openPostgres(location, { max: opts.poolMax ?? 10 });
      extra.push(d);
      return await make(d, o.projections ?? opts.projections ?? []);
    },
    close: async () => {
      for (const d of extra) await d.close();
      await db.close();
      await cleanup();
    },
  };
};

/** Runs `fn` once per available driver as separate test steps. */
export const eachDriver = (
  name: string,
  fn: (h: Harness) => Promise<void>,
  opts: HarnessOptions = {},
): void => {
  Deno.test(name, async (t) => {
    for (const kind of await drivers()) {
      await t.step(kind, async () => {
        const h = await openHarness(kind, opts);
        try {
          await fn(h);
        } finally {
          await h.close();
        }
      });
    }
  });
};
