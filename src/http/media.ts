import { createRoute, OpenAPIHono, z } from "@hono/zod-openapi";
import type { Context } from "hono";
import { CONTENT_TYPES, MEDIA_KINDS, type MediaKind, SCAN_STATUSES } from "../../events/media.ts";
import { auditRead } from "../clinical/patients.ts";
import {
  deleteMedia,
  listMedia,
  loadMedia,
  mediaOwner,
  type MediaRecord,
  mediaStats,
  restoreMedia,
} from "../clinical/media.ts";
import { userName } from "../clinical/staff.ts";
import { visibleMedia } from "../clinical/visibility.ts";
import { uploadMedia } from "../clinical/media_upload.ts";
import { NotFoundError, ValidationError } from "../errors.ts";
import { ALLOW_LISTS, DOCUMENT_CATEGORIES, PHOTO_CATEGORIES } from "../media/categories.ts";
import { sanitizeFilename } from "../media/multipart.ts";
import type { StepTimings } from "../media/pipeline.ts";
import { allowed, authenticate, authorize, deny, requestMetadata } from "./auth_middleware.ts";
import {
  byEncounter,
  byMedia,
  byPatient,
  livePatient,
  patientInPath,
  patientOfEncounter,
  patientOfMedia,
  resourceOf,
} from "./patient_scope.ts";
import type { AppEnv } from "./env.ts";
import { problemResponses } from "./problem.ts";
import {
  bearer,
  contentDisposition,
  IF_NONE_MATCH,
  json,
  LOCATION_HEADERS,
  NOT_MODIFIED,
  notModified,
} from "./route_kit.ts";

const MediaSchema = z.object({
  id: z.uuid(),
  patientId: z.uuid(),
  encounterId: z.uuid().nullable(),
  kind: z.enum(MEDIA_KINDS),
  category: z.string(),
  contentType: z.enum(CONTENT_TYPES),
  size: z.number().int().openapi({ description: "bytes served by /content" }),
  sha256: z.string().openapi({ description: "SHA-256 (hex) of the bytes /content serves" }),
  width: z.number().int().nullable(),
  height: z.number().int().nullable(),
  hasThumbnail: z.boolean(),
  filename: z.string().nullable().openapi({ description: "sanitised; metadata only" }),
  notes: z.string().nullable(),
  uploader: z.object({ id: z.uuid(), name: z.string().nullable() }),
  scanStatus: z.enum(SCAN_STATUSES).openapi({
    description: "`not_scanned` when no scanner is configured; never a false `clean`",
  }),
  dicom: z.record(z.string(), z.string().nullable()).nullable(),
  dicomPatientMismatch: z.boolean().openapi({
    description: "the DICOM header's patient id differs from the patient's MRN",
  }),
  deleted: z.boolean(),
  createdAt: z.string(),
  updatedAt: z.string(),
}).openapi("Media");

const MediaListItem = MediaSchema.pick({
  id: true,
  patientId: true,
  encounterId: true,
  kind: true,
  category: true,
  contentType: true,
  size: true,
  sha256: true,
  scanStatus: true,
  deleted: true,
  createdAt: true,
}).extend({
  uploaderId: z.uuid(),
  dicom: z.object({ modality: z.string().nullable(), studyDate: z.string().nullable() })
    .nullable().openapi({ description: "DICOM only: the rest of the header is in /v1/media/{id}" }),
}).openapi("MediaListItem");

const ListQuery = z.object({
  category: z.string().max(50).optional(),
  kind: z.enum(MEDIA_KINDS).optional(),
  limit: z.coerce.number().int().min(1).max(100).default(50),
  cursor: z.string().max(500).optional(),
  include_deleted: z.enum(["true", "false"]).default("false"),
});

const IdParam = z.object({ id: z.uuid() });

const view = async (c: Context<AppEnv>, m: MediaRecord) => ({
  id: m.id,
  patientId: m.patientId,
  encounterId: m.encounterId,
  kind: m.kind,
  category: m.category,
  contentType: m.contentType,
  size: m.size,
  sha256: m.sha256,
  width: m.width,
  height: m.height,
  hasThumbnail: m.thumbnail !== null,
  filename: m.filename,
  notes: m.notes,
  uploader: { id: m.uploaderId, name: await userName(c.var.deps.runtime().store, m.uploaderId) },
  scanStatus: m.scanStatus,
  dicom: m.dicom,
  dicomPatientMismatch: m.dicomPatientMismatch,
  deleted: m.deleted,
  createdAt: m.createdAt,
  updatedAt: m.updatedAt,
});

/** The media item, 404 when soft-deleted unless the actor may see deleted ones. */
const visible = (c: Context<AppEnv>, id: string, unseal = true) =>
  visibleMedia(c.var.deps.runtime().store, c.get("actor")!, id, { unseal });

const serverTiming = (t: StepTimings) =>
  Object.entries(t).map(([k, v]) => `${k};dur=${v!.toFixed(1)}`).join(", ");

/**
 * Both upload routes: the path's id, the actor's policy, then {@link uploadMedia}.
 * Photos (to an encounter) and documents (to the record) are separate actions:
 * a patient or their full proxy may add documents, never photos.
 */
const upload = (kind: MediaKind) => async (c: Context<AppEnv>) => {
  const action = kind === "photo" ? "media.upload" : "media.upload_document";
  const runtime = c.var.deps.runtime();
  const config = c.var.deps.config;
  const id = c.req.param("id")!;
  if (!z.uuid().safeParse(id).success) {
    throw new ValidationError("bad id", [{ path: "id", message: "must be a UUID" }]);
  }
  // the policy's decision below may add the grant it stood on: same object, so it is seen
  const metadata = requestMetadata(c);
  const { media: m, timings } = await uploadMedia(
    {
      store: runtime.store,
      blobs: runtime.blobs,
      scanner: runtime.scanner,
      maxPixels: config.mediaMaxPixels,
      maxBytes: config.mediaMaxBytes,
      images: runtime.images,
      timeoutSec: config.uploadTimeoutSec,
    },
    {
      kind,
      targetId: id,
      actor: c.get("actor")!,
      metadata,
      contentType: c.req.header("content-type") ?? "",
      contentLength: c.req.header("content-length"),
      body: c.req.raw.body,
    },
    {
      allows: async (patientId) => {
        const ok = await allowed(c, action, () => resourceOf(c, patientId));
        if (ok) Object.assign(metadata, c.get("delegation"));
        return ok;
      },
      deny: () => deny(c, action),
    },
  );
  c.header("Location", `/v1/media/${m.id}`);
  c.header("Server-Timing", serverTiming(timings));
  runtime.metrics.observeUpload(kind, timings);
  return c.json(await view(c, m), 201);
};

const uploadDoc = (kind: MediaKind) => {
  const categories = kind === "photo" ? PHOTO_CATEGORIES : DOCUMENT_CATEGORIES;
  const fields = {
    file: z.string().openapi({ type: "string", format: "binary" }),
    category: z.enum(categories),
    ...(kind === "photo" ? { notes: z.string().max(2000).optional() } : {
      description: z.string().max(2000).optional(),
      encounterId: z.uuid().optional(),
    }),
  };
  return createRoute({
    method: "post",
    path: kind === "photo" ? "/{id}/media" : "/{id}/documents",
    tags: ["media"],
    summary: kind === "photo"
      ? "Upload a clinical photo to an encounter"
      : "Upload a document or image to a patient's record",
    description: (kind === "photo"
      ? "Clinicians only (`media.upload`): never the patient role, as patient or proxy. "
      : "`media.upload_document`: clinicians, and the patient or a full proxy of the patient " +
        "(any document category). ") +
      "multipart/form-data. The type is decided from the bytes (JPEG, PNG, WebP, " +
      "PDF, DICOM, plain text), never from the name; a name or declared type that disagrees, or " +
      "a polyglot, is 415, as is a type the category does not accept. Images are decoded and " +
      "re-encoded without their metadata (EXIF, GPS, XMP) and get a 256-px thumbnail; DICOM " +
      "headers are read. Files are scanned for malware when a scanner is configured, encrypted " +
      "with the patient's key, and the `MediaUploaded` event is appended last. The size limit " +
      "is enforced while the body streams in (413). An image whose header claims more pixels " +
      "than the limit or than its data could hold is 422 before it is scanned or decoded; a " +
      "scan that fails or times out is 503; a full decode queue is 503 with `Retry-After`. " +
      "`Server-Timing` reports each step.",
    security: bearer,
    request: {
      params: IdParam,
      body: {
        required: true,
        content: {
          "multipart/form-data": {
            schema: z.object(fields),
            // what the part may declare; the bytes decide, and the category narrows it
            encoding: {
              file: {
                contentType: [...new Set(Object.values(ALLOW_LISTS[kind]).flat())].join(", "),
              },
            },
          },
        },
      },
    },
    responses: {
      201: {
        description: "stored",
        headers: LOCATION_HEADERS.extend({
          "Server-Timing": z.string().openapi({
            description: "the duration of each step of the upload pipeline",
            example:
              "parse;dur=12.1, hash;dur=0.8, sniff;dur=0.1, scan;dur=40.5, encrypt;dur=1.2, " +
              "write;dur=2.3, append;dur=4.0",
          }),
        }),
        content: json(MediaSchema),
      },
      ...problemResponses(
        "unauthorized",
        "forbidden",
        "not-found",
        "conflict",
        "payload-too-large",
        "request-timeout",
        "unsupported-media-type",
        "validation",
        "corrupt-media",
        "malware-detected",
        "unavailable",
      ),
    },
  });
};

const listRoute = (by: "patient" | "encounter") =>
  createRoute({
    method: "get",
    path: "/{id}/media",
    tags: ["media"],
    summary: by === "patient"
      ? "A patient's photos and documents, newest first (audited)"
      : "An encounter's photos and documents, newest first (audited)",
    security: bearer,
    middleware: [
      authenticate(),
      authorize("media.list", by === "patient" ? byPatient : byEncounter),
      livePatient(by === "patient" ? patientInPath : patientOfEncounter),
    ] as const,
    request: { params: IdParam, query: ListQuery },
    responses: {
      200: {
        description: "a page; pass `nextCursor` as `cursor` for the next",
        content: json(z.object({
          items: z.array(MediaListItem),
          nextCursor: z.string().nullable(),
          total: z.number().int().openapi({ description: "items matching, on every page" }),
        })),
      },
      ...problemResponses("unauthorized", "forbidden", "not-found", "validation", "unavailable"),
    },
  });

const list = (by: "patient" | "encounter") => async (c: Context<AppEnv>) => {
  const runtime = c.var.deps.runtime();
  const id = c.req.param("id")!;
  const q = ListQuery.parse(c.req.query());
  const includeDeleted = q.include_deleted === "true";
  if (includeDeleted && !(await allowed(c, "media.see_deleted"))) {
    await deny(c, "media.see_deleted");
  }
  const { patientId, encounterId } = await mediaOwner(runtime.store, by, id);
  const page = await listMedia(runtime.store, {
    patientId,
    encounterId,
    ...(q.category ? { category: q.category } : {}),
    ...(q.kind ? { kind: q.kind } : {}),
    includeDeleted,
    limit: q.limit,
    ...(q.cursor ? { cursor: q.cursor } : {}),
  });
  await auditRead(runtime, c.get("actor")!, {
    type: "MediaListed",
    data: {
      patientId,
      encounterId,
      mediaIds: page.items.map((m) => m.id),
    },
  }, requestMetadata(c));
  c.header("Cache-Control", "no-store");
  return c.json(page, 200);
};

/** `Content-Disposition` with a sanitised name, ASCII fallback plus RFC 8187 UTF-8. */
const disposition = (type: "inline" | "attachment", name: string) => {
  const safe = sanitizeFilename(name);
  const ascii = safe.replace(/[^\x20-\x7e]/g, "_").replace(/["\\]/g, "_");
  return `${type}; filename="${ascii}"; filename*=UTF-8''${encodeURIComponent(safe)}`;
};

const sendBytes = (
  c: Context<AppEnv>,
  bytes: Uint8Array<ArrayBuffer>,
  contentType: string,
  sha256: string,
  disp: string,
) =>
  // after the read was audited: a 304 is the client looking at bytes it holds
  notModified(c, `"${sha256}"`) ?? c.body(bytes, 200, {
    "Content-Type": contentType === "text/plain" ? "text/plain; charset=utf-8" : contentType,
    "Content-Disposition": disp,
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    ETag: `"${sha256}"`,
    "Content-Length": String(bytes.length),
  });

const STATS_ROW = z.object({
  count: z.number().int(),
  bytes: z.number().int(),
  deletedCount: z.number().int(),
  deletedBytes: z.number().int(),
});

/** A patient's photos and documents, mounted under `/v1/patients`: upload a document, list. */
export const patientMedia = new OpenAPIHono<AppEnv>();
/** An encounter's photos and documents, mounted under `/v1/encounters`: upload a photo, list. */
export const encounterMedia = new OpenAPIHono<AppEnv>();

// uploads read the raw body as a stream: documented here, mounted without a body validator
encounterMedia.openAPIRegistry.registerPath(uploadDoc("photo"));
encounterMedia.post("/:id/media", authenticate(), upload("photo"));
patientMedia.openAPIRegistry.registerPath(uploadDoc("document"));
patientMedia.post("/:id/documents", authenticate(), upload("document"));

patientMedia.openapi(listRoute("patient"), list("patient"));
encounterMedia.openapi(listRoute("encounter"), list("encounter"));

/** Photos and documents by id, mounted under `/v1/media`: read, download, delete, restore, statistics. */
export const media = new OpenAPIHono<AppEnv>()
  .openapi(
    createRoute({
      method: "get",
      path: "/categories",
      tags: ["media"],
      summary: "Upload categories and the types each accepts",
      security: bearer,
      middleware: [authenticate(), authorize("media.categories")] as const,
      responses: {
        200: {
          description: "per kind, per category, the accepted content types",
          content: json(z.record(z.string(), z.record(z.string(), z.array(z.string())))),
        },
        ...problemResponses("unauthorized", "forbidden"),
      },
    }),
    (c) => c.json(ALLOW_LISTS as Record<string, Record<string, string[]>>, 200),
  )
  .openapi(
    createRoute({
      method: "get",
      path: "/stats",
      tags: ["media"],
      summary: "Storage statistics: count and bytes by kind and category",
      security: bearer,
      middleware: [authenticate(), authorize("media.stats")] as const,
      responses: {
        200: {
          description: "deleted items are counted apart; their blobs stay on disk",
          content: json(z.object({
            categories: z.array(
              STATS_ROW.extend({ kind: z.enum(MEDIA_KINDS), category: z.string() }),
            ),
            total: STATS_ROW,
          })),
        },
        ...problemResponses("unauthorized", "forbidden"),
      },
    }),
    async (c) => c.json(await mediaStats(c.var.deps.runtime().store), 200),
  )
  .openapi(
    createRoute({
      method: "get",
      path: "/{id}",
      tags: ["media"],
      summary: "A photo's or document's metadata (audited)",
      security: bearer,
      middleware: [
        authenticate(),
        authorize("media.read", byMedia),
        livePatient(patientOfMedia),
      ] as const,
      request: { params: IdParam },
      responses: {
        200: { description: "the metadata", content: json(MediaSchema) },
        ...problemResponses("unauthorized", "forbidden", "not-found", "validation", "unavailable"),
      },
    }),
    async (c) => {
      const runtime = c.var.deps.runtime();
      const m = await visible(c, c.req.valid("param").id);
      await auditRead(runtime, c.get("actor")!, {
        type: "MediaViewed",
        data: { mediaId: m.id, patientId: m.patientId },
      }, requestMetadata(c));
      c.header("Cache-Control", "no-store");
      return c.json(await view(c, m), 200);
    },
  )
  .openapi(
    createRoute({
      method: "get",
      path: "/{id}/content",
      tags: ["media"],
      summary: "Download the file (audited)",
      description: "The stored bytes (images re-encoded without metadata) with the sniffed " +
        "Content-Type, `ETag` = SHA-256, `Cache-Control: no-store` and `nosniff`.",
      security: bearer,
      middleware: [
        authenticate(),
        authorize("media.read", byMedia),
        livePatient(patientOfMedia),
      ] as const,
      request: { params: IdParam, headers: IF_NONE_MATCH },
      responses: {
        200: {
          description: "the bytes, as the type sniffed at upload (text as UTF-8); images " +
            "inline, other files as attachments",
          headers: z.object({
            ETag: z.string().openapi({ description: "the SHA-256 of the bytes, quoted" }),
            "Content-Disposition": contentDisposition(
              "inline; filename=\"wound.jpg\"; filename*=UTF-8''wound.jpg",
            ),
          }),
          content: Object.fromEntries(
            CONTENT_TYPES.map((t) => [
              t === "text/plain" ? "text/plain; charset=utf-8" : t,
              { schema: z.string().openapi({ format: "binary" }) },
            ]),
          ),
        },
        ...NOT_MODIFIED,
        ...problemResponses("unauthorized", "forbidden", "not-found", "validation", "unavailable"),
      },
    }),
    async (c) => {
      const runtime = c.var.deps.runtime();
      const m = await visible(c, c.req.valid("param").id);
      const bytes = await runtime.blobs.get(m.patientId, m.blob);
      if (!bytes) throw new NotFoundError("the file was erased");
      await auditRead(runtime, c.get("actor")!, {
        type: "MediaDownloaded",
        data: { mediaId: m.id, patientId: m.patientId },
      }, requestMetadata(c));
      const inline = m.contentType.startsWith("image/");
      return sendBytes(
        c,
        bytes,
        m.contentType,
        m.sha256,
        disposition(inline ? "inline" : "attachment", m.filename ?? "file"),
      );
    },
  )
  .openapi(
    createRoute({
      method: "get",
      path: "/{id}/thumbnail",
      tags: ["media"],
      summary: "A 256-px JPEG thumbnail of an image (audited)",
      security: bearer,
      middleware: [
        authenticate(),
        authorize("media.read", byMedia),
        livePatient(patientOfMedia),
      ] as const,
      request: { params: IdParam, headers: IF_NONE_MATCH },
      responses: {
        200: {
          description: "JPEG",
          headers: z.object({
            ETag: z.string().openapi({ description: "the SHA-256 of the bytes, quoted" }),
            "Content-Disposition": contentDisposition("inline"),
          }),
          content: { "image/jpeg": { schema: z.string().openapi({ format: "binary" }) } },
        },
        ...NOT_MODIFIED,
        ...problemResponses("unauthorized", "forbidden", "not-found", "validation", "unavailable"),
      },
    }),
    async (c) => {
      const runtime = c.var.deps.runtime();
      const m = await visible(c, c.req.valid("param").id);
      if (!m.thumbnail) throw new NotFoundError("this media item has no thumbnail");
      const bytes = await runtime.blobs.get(m.patientId, m.thumbnail.blob);
      if (!bytes) throw new NotFoundError("the file was erased");
      await auditRead(runtime, c.get("actor")!, {
        type: "MediaThumbnailViewed",
        data: { mediaId: m.id, patientId: m.patientId },
      }, requestMetadata(c));
      return sendBytes(c, bytes, "image/jpeg", m.thumbnail.sha256, "inline");
    },
  )
  .openapi(
    createRoute({
      method: "delete",
      path: "/{id}",
      tags: ["media"],
      summary: "Soft-delete a photo or document; `reason` (JSON body or query) is required",
      security: bearer,
      middleware: [
        authenticate(),
        authorize("media.delete", byMedia),
        livePatient(patientOfMedia),
      ] as const,
      request: {
        params: IdParam,
        query: z.object({ reason: z.string().max(1000).optional() }),
        body: { required: false, content: json(z.strictObject({ reason: z.string().max(1000) })) },
      },
      responses: {
        204: { description: "deleted: hidden from lists, the file kept" },
        ...problemResponses("unauthorized", "forbidden", "not-found", "validation", "conflict"),
      },
    }),
    async (c) => {
      const { id } = c.req.valid("param");
      // the decider refuses a blank reason (422)
      const reason = c.req.valid("json")?.reason ?? c.req.valid("query").reason ?? "";
      await visible(c, id, false);
      await deleteMedia(c.var.deps.runtime().store, id, reason, requestMetadata(c));
      return c.body(null, 204);
    },
  )
  .openapi(
    createRoute({
      method: "post",
      path: "/{id}/restore",
      tags: ["media"],
      summary: "Restore a soft-deleted photo or document (admin)",
      security: bearer,
      middleware: [authenticate(), authorize("media.restore")] as const,
      request: { params: IdParam },
      responses: {
        200: { description: "restored (audited as a read)", content: json(MediaSchema) },
        ...problemResponses(
          "unauthorized",
          "forbidden",
          "not-found",
          "validation",
          "conflict",
          "unavailable",
        ),
      },
    }),
    async (c) => {
      const runtime = c.var.deps.runtime();
      const { id } = c.req.valid("param");
      await restoreMedia(runtime.store, id, requestMetadata(c));
      const m = (await loadMedia(runtime.store, id))!;
      // the answer shows the sealed fields: that is a read like any other
      await auditRead(runtime, c.get("actor")!, {
        type: "MediaViewed",
        data: { mediaId: m.id, patientId: m.patientId },
      }, requestMetadata(c));
      return c.json(await view(c, m), 200);
    },
  );
