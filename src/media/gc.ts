import type { Db } from "../store/db.ts";
import { sql } from "../store/sql.ts";
import { claimBlobDir } from "./blob_claim.ts";
import type { BlobStore } from "./blob_store.ts";

/** Files younger than this may belong to an upload whose event is still to come. */
export const GC_GRACE_MS = 60 * 60_000;

export interface GcReport {
  scanned: number;
  referenced: number;
  orphans: { path: string; bytes: number }[];
  /** Unreferenced files older than the directory's adoption: maybe another database's, kept. */
  predatingAdoption: number;
  removed: number;
  bytesFreed: number;
}

/**
 * Removes blobs no media event names (left by an upload that failed or
 * crashed before its event), and unfinished temporary files, once older
 * than the grace period. Blobs of deleted media stay: soft delete keeps the
 * file. Blobs of erased patients go (erasure deletes them; a crash may
 * leave some). With `dryRun` it only reports.
 *
 * Refuses (throws `BlobDirError`) a directory that belongs to another
 * database: every one of its files would look orphaned here.
 */
export const collectGarbage = async (
  db: Db,
  blobs: BlobStore,
  opts: { now?: Date; graceMs?: number; dryRun?: boolean } = {},
): Promise<GcReport> => {
  const marker = await claimBlobDir(db, blobs);
  const adoptedAt = marker.adopted ? new Date(marker.claimedAt).getTime() : -Infinity;
  const cutoff = (opts.now ?? new Date()).getTime() - (opts.graceMs ?? GC_GRACE_MS);
  // an erased patient's files are unreadable (their key is gone) and erasure deletes them:
  // one a crash left behind is garbage too
  const rows = await db.query<{ blob: string | null; thumb_blob: string | null }>(
    sql`select blob, thumb_blob from media m where not exists (select 1 from patients p
      where p.id = m.patient_id and p.erased_at is not null)`,
  );
  const live = new Set(rows.flatMap((r) => [r.blob, r.thumb_blob]).filter(Boolean));
  const report: GcReport = {
    scanned: 0,
    referenced: 0,
    orphans: [],
    predatingAdoption: 0,
    removed: 0,
    bytesFreed: 0,
  };
  for await (const f of blobs.list()) {
    report.scanned++;
    if (f.address && live.has(f.address)) {
      report.referenced++;
      continue;
    }
    if (f.mtime.getTime() > cutoff) continue;
    if (f.mtime.getTime() < adoptedAt) {
      report.predatingAdoption++;
      continue;
    }
    // looked at again just before removing: an upload that reuses the blob renews its age
    const { size, mtime } = await Deno.stat(f.path);
    if ((mtime?.getTime() ?? 0) > cutoff) continue;
    report.orphans.push({ path: f.path, bytes: size });
    if (opts.dryRun) continue;
    await Deno.remove(f.path);
    report.removed++;
    report.bytesFreed += size;
  }
  return report;
};
