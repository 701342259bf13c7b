/// <reference lib="deno.worker" />
/**
 * A worker of {@link ImagePool}: decodes and re-encodes one image at a time
 * off the server's event loop. Refusals travel back as their reason and
 * message; any other failure as a bare "failed" (its message might quote
 * the input).
 */
import { UploadRejectedError } from "../errors.ts";
import { processImage } from "./image.ts";
import type { ImageJob, ImageReply } from "./image_pool.ts";

self.onmessage = async (e: MessageEvent<ImageJob>) => {
  const { id, bytes, type, opts } = e.data;
  let reply: ImageReply;
  try {
    const r = await processImage(bytes, type, opts);
    reply = { id, ok: r };
    self.postMessage(reply, [r.bytes.buffer as ArrayBuffer, r.thumbnail.buffer as ArrayBuffer]);
    return;
  } catch (err) {
    reply = err instanceof UploadRejectedError
      ? { id, rejected: { reason: err.reason, message: err.message } }
      : { id, failed: true };
  }
  self.postMessage(reply);
};
