import { ConfigError } from "../config.ts";
import type { Db } from "../store/db.ts";
import { type Installation, readInstallation, recordBlobDirClaim } from "../store/installation.ts";
import type { BlobStore } from "./blob_store.ts";

/** The marker file at the top of a blob directory, naming the installation it belongs to. */
export const BLOB_MARKER = "installation.json";

/** What the marker file holds. */
export interface BlobDirMarker {
  installation: string;
  claimedAt: string;
  /**
   * The directory held blobs before it was marked (a deployment from before
   * markers): files older than `claimedAt` may be another database's, so gc
   * leaves them alone.
   */
  adopted: boolean;
}

/** CHARTLOG_BLOB_DIR names a directory this database may not use. */
export class BlobDirError extends ConfigError {
  override name = "BlobDirError";
}

/**
 * Makes sure the blob directory belongs to this database before anything
 * reads, writes or collects in it, and returns its marker.
 *
 * - A marker naming this installation: ours.
 * - A marker naming another installation: refused. Its files are another
 *   database's; gc here would delete every one of them as orphaned.
 * - No marker and no blob: claimed (the marker is written).
 * - No marker but blobs (a deployment from before markers): adopted only on
 *   this installation's first claim of any blob directory; an installation
 *   that already claimed one made a marker then, so an unmarked directory
 *   full of blobs is not its own. Files that predate the adoption are never
 *   collected (see {@link BlobDirMarker.adopted}).
 *
 * Two databases racing for one unmarked directory: the marker is created
 * exclusively, so one wins and the other is refused.
 */
export const claimBlobDir = async (db: Db, blobs: BlobStore): Promise<BlobDirMarker> => {
  const me = await readInstallation(db);
  const path = `${blobs.root}/${BLOB_MARKER}`;
  let marker = await readMarker(path);
  if (!marker) {
    const files = blobs.list();
    const hasBlobs = !(await files.next()).done;
    await files.return(undefined);
    if (hasBlobs && me.blobDirClaimedAt) throw unmarkedRefusal(blobs.root, me);
    const now = new Date();
    const mine: BlobDirMarker = {
      installation: me.id,
      claimedAt: now.toISOString(),
      adopted: hasBlobs,
    };
    await Deno.mkdir(blobs.root, { recursive: true });
    // written whole beside it, then linked into place: link fails if the name
    // exists, so of two racing claims one wins, and a crash leaves no half marker
    const tmp = `${path}.${crypto.randomUUID()}.tmp`;
    await Deno.writeTextFile(tmp, JSON.stringify(mine, null, 2) + "\n", { mode: 0o644 });
    try {
      await Deno.link(tmp, path);
      marker = mine;
    } catch (err) {
      if (!(err instanceof Deno.errors.AlreadyExists)) throw err;
      marker = await readMarker(path); // another process claimed it first
    } finally {
      await Deno.remove(tmp);
    }
  }
  if (!marker || marker.installation !== me.id) {
    throw new BlobDirError(
      `CHARTLOG_BLOB_DIR (${blobs.root}) belongs to another Chartlog installation ` +
        `(${marker?.installation ?? "unknown"}; this database is ${me.id}): ` +
        `give each database its own CHARTLOG_BLOB_DIR`,
    );
  }
  if (!me.blobDirClaimedAt) await recordBlobDirClaim(db, new Date(marker.claimedAt));
  return marker;
};

const unmarkedRefusal = (root: string, me: Installation) =>
  new BlobDirError(
    `CHARTLOG_BLOB_DIR (${root}) holds blobs but no ${BLOB_MARKER}, and this database ` +
      `(${me.id}) already claimed a blob directory on ${me.blobDirClaimedAt!.toISOString()}: ` +
      `the files are not its own. Point CHARTLOG_BLOB_DIR at this database's directory ` +
      `(restore its ${BLOB_MARKER} if it was lost)`,
  );

const readMarker = async (path: string): Promise<BlobDirMarker | null> => {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return null;
    throw err;
  }
  try {
    const m = JSON.parse(text);
    if (typeof m?.installation === "string" && typeof m.claimedAt === "string") {
      return { installation: m.installation, claimedAt: m.claimedAt, adopted: m.adopted === true };
    }
  } catch {
    // fall through: unreadable
  }
  throw new BlobDirError(`CHARTLOG_BLOB_DIR: ${path} is not a Chartlog installation marker`);
};
