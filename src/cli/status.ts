// `deno task status`: schema version and each projection's checkpoint and lag.
import { readInstallation } from "../store/installation.ts";
import { currentMigration } from "../store/migrations.ts";
import { projectionStatus } from "../store/projection_engine.ts";
import { openCli, parseCliArgs } from "./common.ts";

parseCliArgs(
  "status",
  `usage: deno task status

Prints the database kind and schema migration, the installation id (which
CHARTLOG_BLOB_DIR/installation.json must name), then each projection's
version, mode, checkpoint position, lag behind the log and last error.
On the embedded database, stop the server first.`,
  {},
);

const { runtime } = await openCli();
try {
  console.log(`database: ${runtime.db.kind}, migration ${await currentMigration(runtime.db)}`);
  // the id its blob directory's installation.json must name
  console.log(`installation: ${(await readInstallation(runtime.db)).id}`);
  for (const p of await projectionStatus(runtime.store, runtime.projections)) {
    console.log(
      `${p.name} v${p.version} (${p.mode}): position ${p.position} of ${p.head}, lag ${p.lag}` +
        (p.lastError ? `, last error: ${p.lastError}` : ""),
    );
  }
} finally {
  await runtime.close();
}
