/// <reference lib="deno.worker" />
/**
 * A worker of {@link ImagePool}: decodes and re-encodes one image, or reads
 * one DICOM header (inflating a deflated dataset), at a time, off the
 * server's event loop. Refusals travel back as their reason and
 * message; any other failure as a bare "failed" (its message might quote
 * the input).
 */
import { UploadRejectedError } from "../errors.ts";
import { parseDicom } from "./dicom.ts";
import { processImage } from "./image.ts";
import type { ImageJob, ImageReply } from "./image_pool.ts";

self.onmessage = async (e: MessageEvent<ImageJob>) => {
  const job = e.data;
  const id = job.id;
  let reply: ImageReply;
  try {
    if (job.task === "dicom") {
      const dicom = parseDicom(job.bytes, { maxInflatedBytes: job.maxInflatedBytes });
      reply = { id, ok: { task: "dicom", dicom } };
      self.postMessage(reply);
      return;
    }
    const r = await processImage(job.bytes, job.type, job.opts);
    reply = { id, ok: { task: "image", image: r } };
    self.postMessage(reply, [r.bytes.buffer as ArrayBuffer, r.thumbnail.buffer as ArrayBuffer]);
    return;
  } catch (err) {
    reply = err instanceof UploadRejectedError
      ? { id, rejected: { reason: err.reason, message: err.message } }
      : { id, failed: true };
  }
  self.postMessage(reply);
};
