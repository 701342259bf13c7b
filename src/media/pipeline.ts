import { createHash } from "node:crypto";
import type { EventMetadata } from "../../events/metadata.ts";
import { type CONTENT_TYPES, EncounterId, type MediaKind } from "../../events/media.ts";
import type { Actor } from "../auth/policy.ts";
import { type RejectionReason, UploadRejectedError, ValidationError } from "../errors.ts";
import { mediaStream } from "../clinical/media.ts";
import { handleCommand } from "../domain/command_handler.ts";
import { mediaDecider } from "../domain/media.ts";
import type { EventStore } from "../store/event_store.ts";
import type { BlobStore } from "./blob_store.ts";
import { ALLOW_LISTS, claimedType } from "./categories.ts";
import { type DicomSummary, INFLATE_FACTOR } from "./dicom.ts";
import { checkImageHeader, imageDimensions } from "./image_header.ts";
import type { ImagePool } from "./image_pool.ts";
import { type ParsedUpload, sanitizeFilename } from "./multipart.ts";
import { type Scanner, ScannerUnavailableError } from "./scanner.ts";
import { isPolyglot, sniff } from "./sniff.ts";

type ContentType = (typeof CONTENT_TYPES)[number];

/** Where an upload goes, as the route resolved and authorised it. */
export interface UploadTarget {
  kind: MediaKind;
  patientId: string;
  encounterId: string | null;
  /** The patient's MRN, to compare with a DICOM header's patient id. */
  mrn: string;
}

export interface PipelineDeps {
  store: EventStore;
  blobs: BlobStore;
  scanner: Scanner | null;
  maxPixels: number;
  /**
   * The media limit: a re-encoded image must fit it too, and a deflated
   * DICOM dataset may inflate to {@link INFLATE_FACTOR} times it.
   */
  maxBytes: number;
  /** Where images are decoded and DICOM headers read, off the event loop. */
  images: ImagePool;
}

/** Milliseconds per step of one upload (also sent as `Server-Timing`). */
export type StepTimings = Partial<
  Record<
    | "parse"
    | "hash"
    | "sniff"
    | "decode"
    | "encode"
    | "thumbnail"
    | "dicom"
    | "scan"
    | "encrypt"
    | "write"
    | "append",
    number
  >
>;

export interface Ingested {
  mediaId: string;
  timings: StepTimings;
}

const MAX_NOTES = 2000;

/** An upload's form fields, checked. */
export interface UploadFields {
  category: string;
  notes: string | null;
  encounterId: string | null;
}

/**
 * The event's own schema for the encounter id: a form value it would refuse
 * must be refused here, before anything is stored, not by the append after
 * the blob was written.
 */
const ENCOUNTER_ID = EncounterId.nullable();

/**
 * The multipart fields of an upload, checked before the pipeline runs; every
 * bad one is named.
 */
export const uploadFields = (kind: MediaKind, upload: ParsedUpload): UploadFields => {
  const fields = upload.fields;
  const issues: { path: string; message: string }[] = [];
  if (!upload.file) issues.push({ path: "file", message: "required" });
  const allowed = kind === "photo"
    ? ["category", "notes"]
    : ["category", "description", "notes", "encounterId"];
  for (const name of Object.keys(fields)) {
    if (!allowed.includes(name)) issues.push({ path: name, message: "unknown field" });
  }
  // text never carries NUL (PostgreSQL cannot store it; rejectNul sees JSON bodies only)
  for (const [name, value] of Object.entries(fields)) {
    if (value.includes("\0")) {
      issues.push({ path: name, message: "must not contain NUL characters" });
    }
  }
  const category = fields.category?.trim() ?? "";
  if (!(category in ALLOW_LISTS[kind])) {
    issues.push({
      path: "category",
      message: `must be one of ${Object.keys(ALLOW_LISTS[kind]).join(", ")}`,
    });
  }
  const notes = (fields.notes ?? fields.description)?.trim() || null;
  if (notes && notes.length > MAX_NOTES) {
    issues.push({ path: kind === "photo" ? "notes" : "description", message: "too long" });
  }
  const encounterId = fields.encounterId?.trim().toLowerCase() || null;
  if (!ENCOUNTER_ID.safeParse(encounterId).success) {
    issues.push({ path: "encounterId", message: "must be a UUID" });
  }
  if (issues.length) throw new ValidationError("the upload's fields are invalid", issues);
  return { category, notes, encounterId };
};

/** Decides the type from the bytes and checks it against the name, the category and polyglots. */
export const checkType = (
  kind: MediaKind,
  category: string,
  file: NonNullable<ParsedUpload["file"]>,
): ContentType => {
  const type = sniff(file.bytes);
  if (!type) throw new UploadRejectedError("type_not_allowed", "the file's type is not accepted");
  const named = claimedType(file.filename);
  const declared = CONTENT_TYPE_ALIASES[file.declaredType?.toLowerCase() ?? ""] ?? null;
  if ((named && named !== type) || (declared && declared !== type)) {
    throw new UploadRejectedError(
      "type_mismatch",
      `the file's bytes are ${type}, not what its name or declared type says`,
    );
  }
  if (isPolyglot(file.bytes, type)) {
    throw new UploadRejectedError("type_mismatch", `the file is ${type} and something else too`);
  }
  if (!ALLOW_LISTS[kind][category]!.includes(type)) {
    throw new UploadRejectedError("type_not_allowed", `${type} is not accepted for ${category}`);
  }
  return type;
};

/** Declared part types we compare with the bytes; anything else is ignored. */
const CONTENT_TYPE_ALIASES: Record<string, ContentType> = {
  "image/jpeg": "image/jpeg",
  "image/jpg": "image/jpeg",
  "image/png": "image/png",
  "image/webp": "image/webp",
  "application/pdf": "application/pdf",
  "application/dicom": "application/dicom",
  "text/plain": "text/plain",
};

const sha256Hex = (bytes: Uint8Array) => createHash("sha256").update(bytes).digest("hex");

/** A PDF must at least end like one; a truncated one is refused as corrupt. */
const checkPdf = (bytes: Uint8Array) => {
  const tail = new TextDecoder("latin1").decode(bytes.subarray(Math.max(0, bytes.length - 1024)));
  if (!tail.includes("%%EOF")) {
    throw new UploadRejectedError("corrupt", "the PDF is truncated or damaged");
  }
};

const timed = async <T>(timings: StepTimings, step: keyof StepTimings, f: () => Promise<T> | T) => {
  const t0 = performance.now();
  try {
    return await f();
  } finally {
    timings[step] = (timings[step] ?? 0) + performance.now() - t0;
  }
};

/**
 * Everything after the body was read and its fields checked
 * ({@link uploadFields}): type, the malware scan, decode and re-encode
 * (images, in the worker pool) or header parse (DICOM), encryption to blobs,
 * and last the `MediaUploaded` event. A failure before the event leaves no
 * event (at most an orphan blob for `deno task gc`); the event never names a
 * blob that is not on disk.
 */
export const ingest = async (
  deps: PipelineDeps,
  target: UploadTarget,
  upload: ParsedUpload,
  fields: UploadFields,
  actor: Actor,
  metadata: EventMetadata,
): Promise<Ingested> => {
  const timings: StepTimings = { parse: upload.timings.parse, hash: upload.timings.hash };
  const file = upload.file;
  if (!file) {
    throw new ValidationError("a file is required", [{ path: "file", message: "required" }]);
  }
  const type = await timed(timings, "sniff", () => checkType(target.kind, fields.category, file));

  // what the header alone refuses (size, compression ratio) costs the scanner nothing
  if (type.startsWith("image/")) checkImageHeader(file.bytes, type, deps.maxPixels);
  // nor does an upload the decode queue has no room for
  if (type.startsWith("image/") || type === "application/dicom") deps.images.checkRoom();

  // the scan comes before decoding: no decoder sees bytes a scanner calls malware
  const scan = await timed(timings, "scan", async () => {
    if (!deps.scanner) return { status: "not_scanned" as const, scanner: null };
    const r = await deps.scanner.scan(file.bytes).catch((err) => {
      // no verdict (unreachable, timeout, garbled): refused and recorded, never stored unscanned
      throw new UploadRejectedError(
        "scan_failed",
        err instanceof ScannerUnavailableError ? err.message : "the malware scan failed",
      );
    });
    if (r.status === "infected") {
      throw new UploadRejectedError("malware", "the file was found to carry malware");
    }
    return { status: "clean" as const, scanner: deps.scanner.name };
  });

  let stored = file.bytes as Uint8Array<ArrayBuffer>;
  let dims: { width: number; height: number } | null = null;
  let thumb: Uint8Array<ArrayBuffer> | null = null;
  let dicom: DicomSummary | null = null;
  if (type.startsWith("image/")) {
    // the pool takes the upload's buffer: nothing below reads file.bytes for images
    const img = await deps.images.process(file.bytes, type, {
      maxPixels: deps.maxPixels,
      maxBytes: deps.maxBytes,
    });
    Object.assign(timings, img.timings);
    stored = img.bytes as Uint8Array<ArrayBuffer>;
    dims = { width: img.width, height: img.height };
    thumb = img.thumbnail as Uint8Array<ArrayBuffer>;
  } else if (type === "application/dicom") {
    dicom = await timed(
      timings,
      "dicom",
      () => deps.images.dicom(file.bytes, INFLATE_FACTOR * deps.maxBytes),
    );
  } else if (type === "application/pdf") {
    checkPdf(file.bytes);
  }

  const sha256 = !type.startsWith("image/")
    ? file.sha256
    : await timed(timings, "hash", () => sha256Hex(stored));
  const main = await deps.blobs.put(target.patientId, sha256, stored);
  let thumbnail = null;
  let thumbPut = { encryptMs: 0, writeMs: 0 };
  if (thumb) {
    const thumbSha = sha256Hex(thumb);
    const put = await deps.blobs.put(target.patientId, thumbSha, thumb);
    thumbPut = put;
    const { width, height } = imageDimensions(thumb, "image/jpeg");
    thumbnail = { blob: put.address, size: thumb.length, sha256: thumbSha, width, height };
  }
  timings.encrypt = main.encryptMs + thumbPut.encryptMs;
  timings.write = main.writeMs + thumbPut.writeMs;

  const dicomPatientMismatch = !!dicom?.patientId &&
    dicom.patientId.trim().toUpperCase() !== target.mrn.trim().toUpperCase();
  const mediaId = crypto.randomUUID();
  await timed(
    timings,
    "append",
    () =>
      handleCommand(deps.store, mediaDecider, mediaStream(mediaId), {
        type: "RecordUpload",
        data: {
          mediaId,
          patientId: target.patientId,
          encounterId: fields.encounterId ?? target.encounterId,
          uploaderId: actor.userId,
          kind: target.kind,
          category: fields.category,
          contentType: type,
          size: stored.length,
          sha256,
          blob: main.address,
          uploadSize: file.size,
          uploadSha256: file.sha256,
          width: dims?.width ?? null,
          height: dims?.height ?? null,
          thumbnail,
          scan,
          dicomPatientMismatch,
          filename: sanitizeFilename(file.filename ?? "file"),
          notes: fields.notes,
          dicom: dicom as Record<string, string | null> | null,
        },
      }, { metadata }),
  );
  return { mediaId, timings };
};

/**
 * Records a refused upload in the actor's access stream: ids, the reason,
 * the sniffed type and the byte count, never content. If the record cannot
 * be written the upload is still refused (nothing was stored), so the
 * caller's 4xx stands and this returns false.
 */
export const recordRejection = async (
  store: EventStore,
  actor: Actor,
  data: {
    patientId: string | null;
    encounterId: string | null;
    kind: MediaKind;
    category: string | null;
    reason: RejectionReason;
    detectedType: ContentType | null;
    bytesRead: number;
  },
  metadata: EventMetadata,
): Promise<boolean> => {
  try {
    await store.append(
      `access-${actor.userId}`,
      "any",
      [{ type: "UploadRejected", data }],
      metadata,
    );
    return true;
  } catch {
    return false;
  }
};
