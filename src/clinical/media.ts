import type { EventMetadata } from "../../events/metadata.ts";
import { z } from "zod";
import type { CONTENT_TYPES, MediaKind, SCAN_STATUSES } from "../../events/media.ts";
import { handleCommand } from "../domain/command_handler.ts";
import { unreachable } from "../domain/decider.ts";
import { isMediaEvent, mediaDecider } from "../domain/media.ts";
import { NotFoundError } from "../errors.ts";
import type { EventStore } from "../store/event_store.ts";
import { sql } from "../store/sql.ts";
import type { StoredEvent } from "../store/types.ts";
import { timestamp } from "../timestamp.ts";
import { encounterPatient } from "./encounters.ts";
import { readTogether } from "../store/snapshot.ts";

export const mediaStream = (id: string) => `media-${id}`;

/** A type the pipeline stores (sniffed from the bytes). */
export type MediaContentType = (typeof CONTENT_TYPES)[number];
type ScanStatus = (typeof SCAN_STATUSES)[number];

/** One photo or document as its events tell it (PHI unsealed). */
export interface MediaRecord {
  id: string;
  patientId: string;
  encounterId: string | null;
  kind: MediaKind;
  category: string;
  contentType: MediaContentType;
  size: number;
  sha256: string;
  blob: string;
  width: number | null;
  height: number | null;
  thumbnail: { blob: string; size: number; sha256: string; width: number; height: number } | null;
  scanStatus: ScanStatus;
  dicomPatientMismatch: boolean;
  filename: string | null;
  notes: string | null;
  dicom: Record<string, string | null> | null;
  uploaderId: string;
  deleted: boolean;
  createdAt: string;
  updatedAt: string;
  version: number;
}

/** The record as its stream tells it; an erased item's sealed fields read as null. */
const view = (events: readonly StoredEvent[]): MediaRecord | null => {
  let m: MediaRecord | null = null;
  for (const e of events) {
    if (!isMediaEvent(e)) continue;
    const at = { updatedAt: timestamp(e.recordedAt), version: e.streamVersion };
    switch (e.type) {
      case "MediaUploaded": {
        const d = e.data;
        m = {
          id: d.mediaId,
          patientId: d.patientId,
          encounterId: d.encounterId,
          kind: d.kind,
          category: d.category,
          contentType: d.contentType,
          size: d.size,
          sha256: d.sha256,
          blob: d.blob,
          width: d.width,
          height: d.height,
          thumbnail: d.thumbnail,
          scanStatus: d.scan.status,
          dicomPatientMismatch: d.dicomPatientMismatch,
          filename: d.filename,
          notes: d.notes,
          dicom: d.dicom,
          uploaderId: d.uploaderId,
          deleted: false,
          createdAt: at.updatedAt,
          ...at,
        };
        break;
      }
      case "MediaDeleted":
      case "MediaRestored":
        if (m !== null) {
          const before: MediaRecord = m;
          m = { ...before, deleted: e.type === "MediaDeleted", ...at };
        }
        break;
      default:
        unreachable(e, "event");
    }
  }
  return m;
};

/** The media item from its stream; `unseal: false` skips the sealed fields (and the key lookups). */
export const loadMedia = async (
  store: EventStore,
  id: string,
  opts: { unseal?: boolean } = {},
): Promise<MediaRecord | null> =>
  view(await store.readStream(mediaStream(id), { unseal: opts.unseal ?? true }));

/** The patient a media item belongs to (for the policy), or undefined. */
export const mediaPatient = async (store: EventStore, id: string): Promise<string | undefined> => {
  const [r] = await store.db.query<{ p: string }>(
    sql`select patient_id::text as p from media where id = ${id}::uuid`,
  );
  return r?.p;
};

/**
 * Whose media a list shows: a patient's, or an encounter's together with its
 * patient (the list filters on both, the audit event names both). An
 * unknown encounter is a 404.
 */
export const mediaOwner = async (
  store: EventStore,
  by: "patient" | "encounter",
  id: string,
): Promise<{ patientId: string; encounterId: string | null }> => {
  if (by === "patient") return { patientId: id, encounterId: null };
  const patientId = await encounterPatient(store, id);
  if (!patientId) throw new NotFoundError("no such encounter");
  return { patientId, encounterId: id };
};

export interface MediaListItem {
  id: string;
  patientId: string;
  encounterId: string | null;
  kind: MediaKind;
  category: string;
  contentType: MediaContentType;
  size: number;
  sha256: string;
  scanStatus: ScanStatus;
  uploaderId: string;
  dicom: { modality: string | null; studyDate: string | null } | null;
  deleted: boolean;
  createdAt: string;
}

export interface MediaQuery {
  patientId: string;
  encounterId?: string | null;
  category?: string;
  kind?: MediaKind;
  includeDeleted: boolean;
  limit: number;
  cursor?: string;
}

/** A media cursor: the last row's creation time and id (the list's order). */
const Position = z.tuple([z.iso.datetime(), z.uuid()]);

/**
 * A page of a patient's (or an encounter's) media, newest first, with the
 * next cursor and how many items match in all.
 */
export const listMedia = async (
  store: EventStore,
  q: MediaQuery,
): Promise<{ items: MediaListItem[]; nextCursor: string | null; total: number }> => {
  const after = q.cursor ? await store.codec.cursors.decode("media", Position, q.cursor) : null;
  const where = sql`where patient_id = ${q.patientId}::uuid
      ${q.encounterId ? sql`and encounter_id = ${q.encounterId}::uuid` : sql``}
      ${q.category ? sql`and category = ${q.category}` : sql``}
      ${q.kind ? sql`and kind = ${q.kind}` : sql``}
      ${q.includeDeleted ? sql`` : sql`and not deleted`}`;
  const [rows, [count]] = await readTogether<{
    id: string;
    patient_id: string;
    encounter_id: string | null;
    kind: MediaKind;
    category: string;
    content_type: MediaContentType;
    size: string;
    sha256: string;
    scan_status: ScanStatus;
    uploader_id: string;
    modality: string | null;
    study_date: string | null;
    deleted: boolean;
    created_at: Date | string;
    cursor_at: string;
  }, { n: number }>(
    store.db,
    sql`select media.id::text as id, patient_id::text as patient_id,
      encounter_id::text as encounter_id, kind, category, content_type, size::text as size, sha256,
      scan_status, uploader_id::text as uploader_id, modality, study_date, deleted, created_at,
      -- the cursor keeps full precision, so the keyset comparison is exact
      to_char(created_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') as cursor_at
    from media ${where}
      ${
      after
        ? sql`and (media.created_at, media.id) < (${after[0]}::text::timestamptz, ${
          after[1]
        }::uuid)`
        : sql``
    }
    order by media.created_at desc, media.id desc
    limit ${q.limit + 1}`,
    sql`select count(*)::int as n from media ${where}`,
  );
  const page = rows.slice(0, q.limit);
  const last = page.at(-1);
  return {
    items: page.map((r) => ({
      id: r.id,
      patientId: r.patient_id,
      encounterId: r.encounter_id,
      kind: r.kind,
      category: r.category,
      contentType: r.content_type,
      size: Number(r.size),
      sha256: r.sha256,
      scanStatus: r.scan_status,
      uploaderId: r.uploader_id,
      dicom: r.content_type === "application/dicom"
        ? { modality: r.modality, studyDate: r.study_date }
        : null,
      deleted: r.deleted,
      createdAt: timestamp(r.created_at),
    })),
    nextCursor: rows.length > q.limit && last
      ? await store.codec.cursors.encode("media", [last.cursor_at, last.id])
      : null,
    total: Number(count?.n ?? 0),
  };
};

/** Soft delete: hidden from lists, 404 to all but admins; the blob stays. */
export const deleteMedia = async (
  store: EventStore,
  id: string,
  reason: string,
  metadata: EventMetadata,
): Promise<void> => {
  await handleCommand(store, mediaDecider, mediaStream(id), { type: "DeleteMedia", reason }, {
    metadata,
    unseal: false,
  });
};

export const restoreMedia = async (
  store: EventStore,
  id: string,
  metadata: EventMetadata,
): Promise<void> => {
  await handleCommand(store, mediaDecider, mediaStream(id), { type: "RestoreMedia" }, {
    metadata,
    unseal: false,
  });
};

export interface StatsRow {
  kind: MediaKind;
  category: string;
  count: number;
  bytes: number;
  deletedCount: number;
  deletedBytes: number;
}

/** Count and bytes by kind and category; deleted items counted apart. */
export const mediaStats = async (
  store: EventStore,
): Promise<{ categories: StatsRow[]; total: Omit<StatsRow, "kind" | "category"> }> => {
  const rows = await store.db.query<Record<string, string>>(sql`select kind, category,
      count(*) filter (where not deleted)::text as count,
      coalesce(sum(size) filter (where not deleted), 0)::text as bytes,
      count(*) filter (where deleted)::text as deleted_count,
      coalesce(sum(size) filter (where deleted), 0)::text as deleted_bytes
    from media group by kind, category order by kind, category`);
  const categories = rows.map((r) => ({
    kind: r.kind as MediaKind,
    category: r.category!,
    count: Number(r.count),
    bytes: Number(r.bytes),
    deletedCount: Number(r.deleted_count),
    deletedBytes: Number(r.deleted_bytes),
  }));
  const sum = (k: "count" | "bytes" | "deletedCount" | "deletedBytes") =>
    categories.reduce((a, r) => a + r[k], 0);
  return {
    categories,
    total: {
      count: sum("count"),
      bytes: sum("bytes"),
      deletedCount: sum("deletedCount"),
      deletedBytes: sum("deletedBytes"),
    },
  };
};
