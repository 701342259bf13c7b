import type { Db } from "../../src/store/db.ts";
import { migrate, migrations } from "../../src/store/migrations.ts";
import { openPgliteImage, pgliteImage } from "../../src/store/pglite_driver.ts";
import { sql } from "../../src/store/sql.ts";

let image: Promise<Uint8Array<ArrayBuffer>> | undefined;

const hex = (bytes: ArrayBuffer) =>
  [...new Uint8Array(bytes)].map((b) => b.toString(16).padStart(2, "0")).join("");

/**
 * The image's file in the OS temporary directory, named by what makes it:
 * the migrations and the PGlite build (its resolved module URL names the
 * version). A schema change or a PGlite upgrade gets a new file; an
 * unchanged one is shared by every test file and run.
 */
const imagePath = async (): Promise<string> => {
  const what = JSON.stringify([migrations, import.meta.resolve("@electric-sql/pglite")]);
  const digest = hex(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(what)));
  const tmp = Deno.env.get("TMPDIR") || "/tmp";
  return `${tmp}/chartlog-test-pglite-${digest.slice(0, 16)}.tar`;
};

/** Reads the cached image, or makes it and writes it whole (rename) for the next test file. */
const loadOrMake = async (): Promise<Uint8Array<ArrayBuffer>> => {
  const path = await imagePath();
  try {
    return await Deno.readFile(path);
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) throw err;
  }
  const made = await pgliteImage(async (db) => void await migrate(db));
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
 * A migrated, empty in-memory PGlite, copied from an image made once (and
 * kept in the temporary directory across test files and runs): a fresh
 * PGlite spends seconds in initdb (more on a busy machine), a copy well
 * under one. Start-up and migrations themselves are tested on data
 * directories (tests/cli_test.ts, tests/server_test.ts) and on PostgreSQL.
 */
export const openMigratedPglite = async (): Promise<Db> => {
  image ??= loadOrMake().catch((err) => {
    image = undefined;
    throw err;
  });
  const db = await openPgliteImage(await image);
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
