// `deno task migrate`: applies pending schema migrations (idempotent).
import { currentMigration } from "../store/migrations.ts";
import { openCli, parseCliArgs } from "./common.ts";

parseCliArgs(
  "migrate",
  `usage: deno task migrate

Applies pending schema migrations and projection tables to the configured
database (DATABASE_URL, or the embedded one in CHARTLOG_DATA_DIR), then names
each migration it applied, or says the schema is up to date. Safe to run again.
On the embedded database, stop the server first.`,
  {},
);

const { runtime } = await openCli(); // opening the runtime applies migrations
try {
  for (const m of runtime.migrated) console.log(`applied migration ${m.version}: ${m.name}`);
  const at = await currentMigration(runtime.db);
  console.log(
    runtime.migrated.length === 0
      ? `up to date: schema at migration ${at}`
      : `schema at migration ${at}`,
  );
} finally {
  await runtime.close();
}
