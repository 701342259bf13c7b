// `deno task gc [--dry-run] [--grace-minutes=N]`: removes media blobs no event names.
import { collectGarbage, GC_GRACE_MS } from "../media/gc.ts";
import { openCli } from "./common.ts";

const dryRun = Deno.args.includes("--dry-run");
const grace = Deno.args.find((a) => a.startsWith("--grace-minutes="));
const graceMs = grace ? Number(grace.split("=")[1]) * 60_000 : GC_GRACE_MS;
if (!Number.isFinite(graceMs) || graceMs < 0) {
  console.error("--grace-minutes must be a non-negative number");
  Deno.exit(2);
}

const { runtime } = await openCli();
try {
  const r = await collectGarbage(runtime.db, runtime.blobs, { graceMs, dryRun });
  for (const o of r.orphans) console.log(`${dryRun ? "would remove" : "removed"} ${o.path}`);
  console.log(
    `blobs: ${r.scanned} on disk, ${r.referenced} referenced, ${r.orphans.length} orphaned` +
      (dryRun ? " (dry run: nothing removed)" : `, ${r.removed} removed, ${r.bytesFreed} bytes`),
  );
} finally {
  await runtime.close();
}
