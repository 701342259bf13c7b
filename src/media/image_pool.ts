import { type RejectionReason, UploadRejectedError } from "../errors.ts";
import type { DicomSummary } from "./dicom.ts";
import type { ProcessedImage, ProcessImageOptions } from "./image.ts";
import type { SniffedType } from "./sniff.ts";

/** A message to a decode worker: an image to re-encode, or a DICOM header to read. */
export type ImageJob =
  | { id: number; task: "image"; bytes: Uint8Array; type: SniffedType; opts: ProcessImageOptions }
  | { id: number; task: "dicom"; bytes: Uint8Array; maxInflatedBytes: number };

/** A finished job's result, tagged with its task. */
export type ImageResult =
  | { task: "image"; image: ProcessedImage }
  | { task: "dicom"; dicom: DicomSummary };

/** A worker's answer: the result, a refusal, or a failure. */
export type ImageReply =
  | { id: number; ok: ImageResult }
  | { id: number; rejected: { reason: RejectionReason; message: string } }
  | { id: number; failed: true };

/** Options of {@link ImagePool}. */
export interface ImagePoolOptions {
  /**
   * Jobs that may wait for a worker; one more is refused at once ("busy",
   * HTTP 503 with Retry-After) rather than queued. Default unbounded.
   */
  maxQueue?: number;
  /**
   * A worker idle this long ends (each is an isolate of its own, tens of MB);
   * the next job starts one again. Default 60 s.
   */
  idleMs?: number;
}

/** What a refused job's client is told to wait before trying again, in seconds. */
export const BUSY_RETRY_AFTER_SEC = 5;

interface Pending {
  job: ImageJob;
  resolve: (r: ImageResult) => void;
  reject: (e: Error) => void;
}

interface Slot {
  worker: Worker;
  busy: Pending | null;
  /** Ends the worker once it has been idle `idleMs`; cleared when it gets a job. */
  idle: ReturnType<typeof setTimeout> | null;
}

/**
 * Image decoding and re-encoding, and DICOM header parsing (inflate
 * included), in a few workers, so that a 12-megapixel photo or a deflated
 * dataset (seconds of CPU) never stalls the event loop that serves every
 * other request, and so that at most `size` files are decoded at once: with
 * the pixel and inflate limits, that bounds the memory uploads can take.
 * Further jobs wait in a queue of at most `maxQueue`; past it a job is
 * refused at once. Workers start on first use and end when idle for
 * `idleMs`, so an idle server holds none; a crashed worker is replaced and
 * its job fails.
 */
export class ImagePool {
  readonly #size: number;
  readonly #maxQueue: number;
  readonly #idleMs: number;
  readonly #slots: Slot[] = [];
  readonly #queue: Pending[] = [];
  #nextId = 1;
  #closed = false;

  constructor(size: number, options: ImagePoolOptions = {}) {
    if (!(size >= 1)) throw new RangeError("an image pool needs at least one worker");
    const { maxQueue = Infinity, idleMs = 60_000 } = options;
    if (!(maxQueue >= 0)) throw new RangeError("maxQueue must be 0 or more");
    if (!(idleMs >= 0)) throw new RangeError("idleMs must be 0 or more");
    this.#size = size;
    this.#maxQueue = maxQueue;
    this.#idleMs = idleMs;
  }

  /** Workers alive now, busy or idle. */
  get workers(): number {
    return this.#slots.length;
  }

  /** Jobs in a worker now. */
  get running(): number {
    return this.#slots.filter((s) => s.busy).length;
  }

  /**
   * {@link processImage} in a worker. The input's buffer is transferred to
   * the worker: the caller must not use `bytes` afterwards.
   *
   * @throws UploadRejectedError "busy" (at once) when the queue is full.
   */
  async process(
    bytes: Uint8Array,
    type: SniffedType,
    opts: ProcessImageOptions,
  ): Promise<ProcessedImage> {
    const r = await this.#submit({ id: this.#nextId++, task: "image", bytes, type, opts });
    if (r.task !== "image") throw new Error("the image worker answered another task");
    return r.image;
  }

  /**
   * {@link parseDicom} in a worker; `bytes` is copied, the caller keeps it.
   *
   * @throws UploadRejectedError "busy" (at once) when the queue is full.
   */
  async dicom(bytes: Uint8Array, maxInflatedBytes: number): Promise<DicomSummary> {
    const r = await this.#submit({
      id: this.#nextId++,
      task: "dicom",
      bytes: bytes.slice(),
      maxInflatedBytes,
    });
    if (r.task !== "dicom") throw new Error("the image worker answered another task");
    return r.dicom;
  }

  /**
   * Throws the "busy" refusal when a job submitted now would be refused, so
   * that a caller can refuse before costlier steps (the malware scan).
   */
  checkRoom(): void {
    const idle = this.#slots.some((s) => !s.busy) || this.#slots.length < this.#size;
    if (!idle && this.#queue.length >= this.#maxQueue) {
      throw new UploadRejectedError(
        "busy",
        "too many uploads are being processed; try again shortly",
        BUSY_RETRY_AFTER_SEC,
      );
    }
  }

  #submit(job: ImageJob): Promise<ImageResult> {
    if (this.#closed) return Promise.reject(new Error("the image pool is closed"));
    try {
      this.checkRoom();
    } catch (err) {
      return Promise.reject(err);
    }
    return new Promise<ImageResult>((resolve, reject) => {
      this.#queue.push({ job, resolve, reject });
      this.#pump();
    });
  }

  /** Stops every worker; queued and running jobs fail. */
  close(): void {
    this.#closed = true;
    for (const s of this.#slots.splice(0)) {
      if (s.idle !== null) clearTimeout(s.idle);
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
      if (slot.idle !== null) clearTimeout(slot.idle);
      slot.idle = null;
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
    const slot: Slot = { worker, busy: null, idle: null };
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
      if (!slot.busy && !this.#closed) this.#endWhenIdle(slot);
    };
    worker.onerror = (e) => {
      e.preventDefault();
      if (slot.idle !== null) clearTimeout(slot.idle);
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

  #endWhenIdle(slot: Slot): void {
    if (slot.idle !== null) clearTimeout(slot.idle);
    const timer = setTimeout(() => {
      slot.idle = null;
      const i = this.#slots.indexOf(slot);
      if (slot.busy || i < 0) return;
      this.#slots.splice(i, 1);
      slot.worker.terminate();
    }, this.#idleMs);
    slot.idle = timer;
    // an idle worker's timer never keeps the process alive
    Deno.unrefTimer(timer);
  }
}
