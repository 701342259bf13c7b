// `deno task gc [--dry-run] [--grace-minutes=N]`: removes media blobs no event names.
import { ConfigError } from "../config.ts";
import { collectGarbage, GC_GRACE_MS } from "../media/gc.ts";
import { openCli, parseCliArgs, usageError } from "./common.ts";

const { values } = parseCliArgs(
  "gc",
  `usage: deno task gc [--dry-run] [--grace-minutes N]

Removes media blobs in CHARTLOG_BLOB_DIR that no media event names (left by
uploads that failed or crashed), and unfinished temporary files, once they
are older than the grace period. Blobs of soft-deleted media are kept; those of
erased patients (unreadable, and deleted by the erasure unless it was cut short) go.

--dry-run          list what would be removed; remove nothing
--grace-minutes N  only files older than N minutes (default ${GC_GRACE_MS / 60_000})`,
  { "dry-run": { type: "boolean" }, "grace-minutes": { type: "string" } },
);
const dryRun = values["dry-run"] ?? false;
const grace = values["grace-minutes"];
const graceMs = grace === undefined ? GC_GRACE_MS : Number(grace) * 60_000;
if (grace?.trim() === "" || !Number.isFinite(graceMs) || graceMs < 0) {
  usageError("gc", "--grace-minutes must be a non-negative number");
}

const { runtime } = await openCli();
try {
  const r = await collectGarbage(runtime.db, runtime.blobs, { graceMs, dryRun });
  for (const o of r.orphans) console.log(`${dryRun ? "would remove" : "removed"} ${o.path}`);
  console.log(
    `blobs: ${r.scanned} on disk, ${r.referenced} referenced, ${r.orphans.length} orphaned` +
      (dryRun ? " (dry run: nothing removed)" : `, ${r.removed} removed, ${r.bytesFreed} bytes`),
  );
  if (r.predatingAdoption > 0) {
    console.log(
      `kept ${r.predatingAdoption} unreferenced files older than this directory's adoption ` +
        `(they may be another database's; remove them by hand once you are sure)`,
    );
  }
} catch (err) {
  if (!(err instanceof ConfigError)) throw err;
  // the directory is another database's: nothing was looked at, nothing removed
  console.error(`gc: refused: ${err.message}`);
  Deno.exitCode = 1;
} finally {
  await runtime.close();
}
