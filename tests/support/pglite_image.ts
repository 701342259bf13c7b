import type { Db } from "../../src/store/db.ts";
import { migrate } from "../../src/store/migrations.ts";
import { openPgliteImage, pgliteImage } from "../../src/store/pglite_driver.ts";
import { sql } from "../../src/store/sql.ts";

let image: Promise<Blob> | undefined;

/**
 * A migrated, empty in-memory PGlite, copied from an image made once per
 * test process: a fresh PGlite spends seconds in initdb (more on a busy
 * machine), a copy about one. Tests about start-up and migrations use data
 * directories (tests/cli_test.ts, tests/server_test.ts) or a fresh database.
 */
export const openMigratedPglite = async (): Promise<Db> => {
  image ??= pgliteImage(async (db) => void await migrate(db)).catch((err) => {
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
