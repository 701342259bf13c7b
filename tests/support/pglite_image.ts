import { catalog as appCatalog } from "../../events/index.ts";
import { projections as appProjections } from "../../projections/index.ts";
import type { Db } from "../../src/store/db.ts";
import { EventStore } from "../../src/store/event_store.ts";
import { migrate, migrations } from "../../src/store/migrations.ts";
import { PhiCodec } from "../../src/store/phi_codec.ts";
import { openPgliteImage, pgliteImage } from "../../src/store/pglite_driver.ts";
import { setupProjections } from "../../src/store/projection_engine.ts";
import { subjectKeyShredder } from "../../src/store/shred.ts";
import { sql } from "../../src/store/sql.ts";

/**
 * `migrated`: the schema alone. `app`: also the app's projections set up on
 * the empty log, as the server's start-up leaves them (an app under test then
 * builds none: about 0.4 s of CPU less an open on PGlite). Neither has the
 * template databases (see `prepare`).
 */
type ImageKind = "migrated" | "app";

const images = new Map<ImageKind, Promise<Uint8Array<ArrayBuffer>>>();

const hex = (bytes: ArrayBuffer) =>
  [...new Uint8Array(bytes)].map((b) => b.toString(16).padStart(2, "0")).join("");

/**
 * The image's file in the OS temporary directory, named by what makes it:
 * the migrations, the PGlite build (its resolved module URL names the
 * version) and, for the app's image, the projections' definitions (as the
 * PostgreSQL template of tests/support/harness.ts). A schema change or a
 * PGlite upgrade gets a new file; an unchanged one is shared by every test
 * file and run.
 */
const imagePath = async (kind: ImageKind): Promise<string> => {
  const what = JSON.stringify([
    migrations,
    import.meta.resolve("@electric-sql/pglite"),
    "no template databases, checkpointed",
    kind === "app"
      ? appProjections.map((p) => [p.name, p.version, p.mode, p.tables, p.setup, p.views ?? []])
      : null,
  ]);
  const digest = hex(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(what)));
  const tmp = Deno.env.get("TMPDIR") || "/tmp";
  return `${tmp}/chartlog-test-pglite-${kind}-${digest.slice(0, 16)}.tar`;
};

const prepare = async (kind: ImageKind, db: Db): Promise<void> => {
  await migrate(db);
  // No test makes a database on PGlite, and the two template databases are
  // a third of the image (15 of 40 MB): without them an open costs about
  // 0.3 s of CPU, against 0.45 s.
  for (const t of ["template0", "template1"]) {
    await db.exec(`alter database ${t} is_template false`);
    await db.exec(`drop database ${t}`);
  }
  if (kind === "migrated") return;
  // the key only seals what setting up writes, which is nothing: each test has its own
  const codec = new PhiCodec(db, crypto.getRandomValues(new Uint8Array(32)));
  const store = new EventStore({
    db,
    catalog: appCatalog,
    codec,
    shredder: subjectKeyShredder(codec),
    projections: appProjections,
  });
  await setupProjections(store, appProjections);
};

/** Reads the cached image, or makes it and writes it whole (rename) for the next test file. */
const loadOrMake = async (kind: ImageKind): Promise<Uint8Array<ArrayBuffer>> => {
  const path = await imagePath(kind);
  try {
    return await Deno.readFile(path);
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) throw err;
  }
  const made = await pgliteImage((db) => prepare(kind, db));
  // test files run side by side: each writes its own file, the rename is atomic
  const part = `${path}.${crypto.randomUUID()}.part`;
  try {
    await Deno.writeFile(part, made);
    await Deno.rename(part, path);
  } catch {
    await Deno.remove(part).catch(() => {}); // no cache this time, the image still serves
  }
  return made;
};

/**
 * A migrated, empty in-memory PGlite (`app`: with the app's projections set
 * up), copied from an image made once (and kept in the temporary directory
 * across test files and runs): a fresh PGlite spends seconds in initdb (more
 * on a busy machine), a copy well under one. Start-up and migrations
 * themselves are tested on data directories (tests/cli_test.ts,
 * tests/server_test.ts) and on PostgreSQL.
 */
export const openMigratedPglite = async (kind: ImageKind = "migrated"): Promise<Db> => {
  let image = images.get(kind);
  if (!image) {
    image = loadOrMake(kind);
    images.set(kind, image);
    image.catch(() => images.delete(kind));
  }
  // A pool of 4 MB, not the server's 16: PostgreSQL zeroes it at each start, and a
  // test's few rows fit (0.21 against 0.27 s of CPU an open, half the pages touched).
  const db = await openPgliteImage(await image, { sharedBuffers: "4MB" });
  try {
    // every database has its own random installation id (migration 2): a copy
    // gets a new one from the same column default
    await db.batch([
      sql`delete from installation`,
      sql`insert into installation default values`,
    ]);
  } catch (err) {
    await db.close();
    throw err;
  }
  return db;
};
