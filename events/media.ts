import { z } from "zod";
import { REJECTION_REASONS } from "../src/errors.ts";
import { defineEvent } from "../src/store/catalog.ts";

/**
 * Clinical photos and documents. Stream `media-<id>`. The bytes never enter
 * the log: they live in an encrypted, content-addressed blob the event
 * names. What could identify the patient (the original file name, the
 * notes, the DICOM header, a deletion reason) is sealed with the patient's
 * key, as the file itself is.
 */
const mediaId = z.uuid();
const patientId = z.uuid();
/** An encounter id as the media events accept it; upload forms are checked against the same. */
export const EncounterId = z.uuid();
const patientKey = { subject: (d: { patientId: string }) => `patient-${d.patientId}` };
const sha256 = z.string().regex(/^[0-9a-f]{64}$/);

export const MEDIA_KINDS = ["photo", "document"] as const;
export type MediaKind = (typeof MEDIA_KINDS)[number];

export const CONTENT_TYPES = [
  "image/jpeg",
  "image/png",
  "image/webp",
  "application/pdf",
  "application/dicom",
  "text/plain",
] as const;

export const SCAN_STATUSES = ["clean", "not_scanned"] as const;

/** The DICOM header fields a PACS indexes, as read from the file (sealed). */
export const DicomTags = z.record(z.string(), z.string().nullable());

export const MediaUploaded = defineEvent({
  type: "MediaUploaded",
  version: 1,
  schema: z.strictObject({
    mediaId,
    patientId,
    encounterId: EncounterId.nullable(),
    uploaderId: z.uuid(),
    kind: z.enum(MEDIA_KINDS),
    category: z.string(),
    contentType: z.enum(CONTENT_TYPES),
    /** What is stored and served: for images the re-encoded, metadata-free bytes. */
    size: z.number().int().nonnegative(),
    sha256,
    blob: z.string(),
    /** What the client sent. */
    uploadSize: z.number().int().nonnegative(),
    uploadSha256: sha256,
    width: z.number().int().positive().nullable(),
    height: z.number().int().positive().nullable(),
    thumbnail: z.strictObject({
      blob: z.string(),
      size: z.number().int().nonnegative(),
      sha256,
      width: z.number().int().positive(),
      height: z.number().int().positive(),
    }).nullable(),
    scan: z.strictObject({ status: z.enum(SCAN_STATUSES), scanner: z.string().nullable() }),
    dicomPatientMismatch: z.boolean(),
    filename: z.string(),
    notes: z.string().nullable(),
    dicom: DicomTags.nullable(),
  }),
  phi: { ...patientKey, fields: ["filename", "notes", "dicom"] },
});

/**
 * An upload the pipeline refused, and why. Stream `access-<actorId>`. It
 * carries no content, no file name and no notes: only ids, the reason, the
 * type the bytes turned out to be and how many were read.
 */
export const UploadRejected = defineEvent({
  type: "UploadRejected",
  version: 1,
  schema: z.strictObject({
    patientId: z.uuid().nullable(),
    encounterId: EncounterId.nullable(),
    kind: z.enum(MEDIA_KINDS),
    category: z.string().nullable(),
    reason: z.enum(REJECTION_REASONS),
    detectedType: z.enum(CONTENT_TYPES).nullable(),
    bytesRead: z.number().int().nonnegative(),
  }),
});

export const MediaDeleted = defineEvent({
  type: "MediaDeleted",
  version: 1,
  schema: z.strictObject({ mediaId, patientId, reason: z.string() }),
  phi: { ...patientKey, fields: ["reason"] },
});

export const MediaRestored = defineEvent({
  type: "MediaRestored",
  version: 1,
  schema: z.strictObject({ mediaId, patientId }),
});

/** Reads, all to `access-<actorId>`: metadata, the bytes, the thumbnail, a list. */
export const MediaViewed = defineEvent({
  type: "MediaViewed",
  version: 1,
  schema: z.strictObject({ mediaId, patientId }),
});

export const MediaDownloaded = defineEvent({
  type: "MediaDownloaded",
  version: 1,
  schema: z.strictObject({ mediaId, patientId }),
});

export const MediaThumbnailViewed = defineEvent({
  type: "MediaThumbnailViewed",
  version: 1,
  schema: z.strictObject({ mediaId, patientId }),
});

export const MediaListed = defineEvent({
  type: "MediaListed",
  version: 1,
  schema: z.strictObject({
    patientId,
    encounterId: z.uuid().nullable(),
    mediaIds: z.array(mediaId),
  }),
});

export const mediaEvents = [
  MediaUploaded,
  UploadRejected,
  MediaDeleted,
  MediaRestored,
  MediaViewed,
  MediaDownloaded,
  MediaThumbnailViewed,
  MediaListed,
];
