import postgres from "postgres";
import type { Catalog } from "../../src/store/catalog.ts";
import type { Db } from "../../src/store/db.ts";
import { EventStore } from "../../src/store/event_store.ts";
import { subjectKeyShredder } from "../../src/store/shred.ts";
import { migrate, migrations } from "../../src/store/migrations.ts";
import { catalog as appCatalog } from "../../events/index.ts";
import { projections as appProjections } from "../../projections/index.ts";
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

const hexOf = (bytes: ArrayBuffer) =>
  [...new Uint8Array(bytes)].map((b) => b.toString(16).padStart(2, "0")).join("");

const urlOf = (name: string) => {
  const url = new URL(PG_ADMIN_URL);
  url.pathname = `/${name}`;
  return url.toString();
};

let template: Promise<string> | undefined;

/**
 * The name of a database migrated and with the app's projections set up on
 * an empty log, made once per schema (its name carries a digest of the
 * migrations and the projections' definitions) and kept on the server for
 * the next test file and run, as tests/support/pglite_image.ts keeps PGlite's.
 * Test files running side by side take turns making it (an advisory lock);
 * it is published by a rename, so a clone never sees it half made.
 */
const appTemplate = (admin: postgres.Sql): Promise<string> =>
  template ??= (async () => {
    const what = JSON.stringify([
      migrations,
      appProjections.map((p) => [p.name, p.version, p.mode, p.tables, p.setup, p.views ?? []]),
    ]);
    const digest = hexOf(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(what)));
    const name = `chartlog_tpl_${digest.slice(0, 16)}`;
    const exists = async () =>
      (await admin`select 1 from pg_database where datname = ${name}`).length > 0;
    if (await exists()) return name;
    // bounded: a test must fail, not hang, if the lock is never released
    for (let i = 0;; i++) {
      const [r] =
        await admin`select pg_try_advisory_lock(hashtext('chartlog test template')) as ok`;
      if (r!.ok) break;
      if (i >= 1200) throw new Error(`the test template ${name} stayed locked for a minute`);
      await new Promise((r) => setTimeout(r, 50));
    }
    try {
      if (await exists()) return name;
      const part = `chartlog_tplpart_${crypto.randomUUID().replaceAll("-", "").slice(0, 16)}`;
      await admin.unsafe(`create database ${part}`);
      const db = openPostgres(urlOf(part), { max: 2 });
      try {
        await migrate(db);
        const codec = new PhiCodec(db, crypto.getRandomValues(new Uint8Array(32)));
        const store = new EventStore({
          db,
          catalog: appCatalog,
          codec,
          shredder: subjectKeyShredder(codec),
          projections: appProjections,
        });
        await setupProjections(store, appProjections);
      } finally {
        await db.close();
      }
      await admin.unsafe(`alter database ${part} rename to ${name}`);
      return name;
    } finally {
      await admin`select pg_advisory_unlock(hashtext('chartlog test template'))`;
    }
  })();

/**
 * A fresh, uniquely named PostgreSQL database; `drop` removes it. `app`: a
 * clone of {@link appTemplate} with an installation id of its own, for a
 * test that opens the app on it (about half a second less than building
 * every projection again, a hundred times a run).
 */
export const createTestDatabase = async (
  opts: { app?: boolean } = {},
): Promise<{ url: string; drop(): Promise<void> }> => {
  const name = `chartlog_test_${crypto.randomUUID().replaceAll("-", "").slice(0, 16)}`;
  const admin = postgres(PG_ADMIN_URL, { max: 1, onnotice: () => {} });
  try {
    if (opts.app) {
      await admin.unsafe(`create database ${name} template ${await appTemplate(admin)}`);
      const db = postgres(urlOf(name), { max: 1, onnotice: () => {} });
      try {
        await db`update installation set id = gen_random_uuid()`;
      } finally {
        await db.end();
      }
    } else {
      await admin.unsafe(`create database ${name}`);
    }
  } finally {
    await admin.end();
  }
  return {
    url: urlOf(name),
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
