import type { Db } from "./db.ts";
import { sql } from "./sql.ts";

/** This database's identity (migration 2), kept in a one-row table. */
export interface Installation {
  /** Random, made once by the migration; survives dump and restore. */
  id: string;
  /** When this installation first claimed a blob directory, or null if never. */
  blobDirClaimedAt: Date | null;
}

export const readInstallation = async (db: Db): Promise<Installation> => {
  const [row] = await db.query<{ id: string; blob_dir_claimed_at: Date | string | null }>(
    sql`select id, blob_dir_claimed_at from installation`,
  );
  if (!row) throw new Error("the installation table is empty: the database was not migrated");
  const at = row.blob_dir_claimed_at;
  return { id: String(row.id), blobDirClaimedAt: at === null ? null : new Date(at) };
};

/** Records the first claim of a blob directory (later claims keep the first time). */
export const recordBlobDirClaim = async (db: Db, at: Date): Promise<void> => {
  await db.query(
    sql`update installation set blob_dir_claimed_at = coalesce(blob_dir_claimed_at, ${at.toISOString()}::timestamptz)`,
  );
};
