import { type RejectionReason, UploadRejectedError } from "../errors.ts";
import type { ProcessedImage, ProcessImageOptions } from "./image.ts";
import type { SniffedType } from "./sniff.ts";

/** A message to an image worker. */
export interface ImageJob {
  id: number;
  bytes: Uint8Array;
  type: SniffedType;
  opts: ProcessImageOptions;
}

/** A worker's answer: the processed image, a refusal, or a failure. */
export type ImageReply =
  | { id: number; ok: ProcessedImage }
  | { id: number; rejected: { reason: RejectionReason; message: string } }
  | { id: number; failed: true };

interface Pending {
  job: ImageJob;
  resolve: (r: ProcessedImage) => void;
  reject: (e: Error) => void;
}

interface Slot {
  worker: Worker;
  busy: Pending | null;
}

/**
 * Image decoding and re-encoding in a few workers, so that a 12-megapixel
 * photo (seconds of CPU) never stalls the event loop that serves every
 * other request, and so that at most `size` images are decoded at once:
 * with the pixel limit, that bounds the memory uploads can take. Further
 * jobs wait in a queue. Workers start on first use; a crashed worker is
 * replaced and its job fails.
 */
export class ImagePool {
  readonly #size: number;
  readonly #slots: Slot[] = [];
  readonly #queue: Pending[] = [];
  #nextId = 1;
  #closed = false;

  constructor(size: number) {
    if (!(size >= 1)) throw new RangeError("an image pool needs at least one worker");
    this.#size = size;
  }

  /**
   * {@link processImage} in a worker. The input's buffer is transferred to
   * the worker: the caller must not use `bytes` afterwards.
   */
  process(
    bytes: Uint8Array,
    type: SniffedType,
    opts: ProcessImageOptions,
  ): Promise<ProcessedImage> {
    if (this.#closed) return Promise.reject(new Error("the image pool is closed"));
    return new Promise((resolve, reject) => {
      this.#queue.push({ job: { id: this.#nextId++, bytes, type, opts }, resolve, reject });
      this.#pump();
    });
  }

  /** Stops every worker; queued and running jobs fail. */
  close(): void {
    this.#closed = true;
    for (const s of this.#slots.splice(0)) {
      s.worker.terminate();
      s.busy?.reject(new Error("the image pool is closed"));
    }
    for (const p of this.#queue.splice(0)) p.reject(new Error("the image pool is closed"));
  }

  #pump(): void {
    while (this.#queue.length > 0) {
      let slot = this.#slots.find((s) => !s.busy);
      if (!slot && this.#slots.length < this.#size) slot = this.#spawn();
      if (!slot) return;
      const p = this.#queue.shift()!;
      slot.busy = p;
      const buffer = p.job.bytes.buffer;
      const whole = p.job.bytes.byteOffset === 0 && p.job.bytes.byteLength === buffer.byteLength;
      // transfer the caller's buffer when it holds exactly the image; copy otherwise
      slot.worker.postMessage(
        whole ? p.job : { ...p.job, bytes: p.job.bytes.slice() },
        whole && buffer instanceof ArrayBuffer ? [buffer] : [],
      );
    }
  }

  #spawn(): Slot {
    const worker = new Worker(new URL("./image_worker.ts", import.meta.url), { type: "module" });
    const slot: Slot = { worker, busy: null };
    worker.onmessage = (e: MessageEvent<ImageReply>) => {
      const p = slot.busy;
      slot.busy = null;
      if (p && p.job.id === e.data.id) {
        const r = e.data;
        if ("ok" in r) p.resolve(r.ok);
        else if ("rejected" in r) {
          p.reject(new UploadRejectedError(r.rejected.reason, r.rejected.message));
        } else p.reject(new Error("image processing failed"));
      }
      this.#pump();
    };
    worker.onerror = (e) => {
      e.preventDefault();
      const i = this.#slots.indexOf(slot);
      if (i >= 0) this.#slots.splice(i, 1);
      worker.terminate();
      slot.busy?.reject(new Error("an image worker crashed"));
      slot.busy = null;
      if (!this.#closed) this.#pump();
    };
    this.#slots.push(slot);
    return slot;
  }
}
