/**
 * multipart/form-data uploads (RFC 7578) parsed by busboy as they stream in:
 * text fields plus at most one file, hashed with SHA-256 on the way.
 *
 * busboy does the RFC 2046 parsing; this module adds what it leaves to its
 * caller: limits that refuse instead of truncating, a cancelled body at the
 * first refusal, a bound on the whole body, and a count of the parts busboy
 * skips without a word (no or malformed Content-Disposition), which are
 * refused rather than lost. Errors name limits and field names, never content
 * or filenames.
 */
import { Buffer } from "node:buffer";
import { createHash } from "node:crypto";
// @ts-types="npm:@types/busboy@1.5.4"
import busboy from "busboy";
import StreamSearch from "streamsearch";
// The parser busboy itself applies to the Content-Type, so the boundary checked is the one used.
import { parseContentType as busboyContentType } from "busboy/lib/utils.js";
import { UploadRejectedError, ValidationError } from "../errors.ts";

/** The single file part of an upload. */
export interface UploadedFile {
  field: string;
  /** Sanitized with {@link sanitizeFilename}; null when the part sent none. Metadata only. */
  filename: string | null;
  /**
   * The part's own Content-Type, parameters dropped: informational, never
   * trusted. Null when absent, and for `text/plain`, which busboy also reports
   * for a part that declares nothing.
   */
  declaredType: string | null;
  /** Backed by an ArrayBuffer of exactly `size` bytes, owned by the result. */
  bytes: Uint8Array<ArrayBuffer>;
  size: number;
  /** SHA-256 of `bytes`, lowercase hex. */
  sha256: string;
}

/** What {@link parseMultipart} returns. */
export interface ParsedUpload {
  /** Text parts: every part that is not the file. */
  fields: Record<string, string>;
  file: UploadedFile | null;
  /** Milliseconds spent parsing and copying (`parse`) and hashing (`hash`). */
  timings: { parse: number; hash: number };
}

/** Limits for {@link parseMultipart}. */
export interface MultipartOptions {
  maxFileBytes: number;
  /** Per text field; default 8 KiB. */
  maxFieldBytes?: number;
  /** Text fields, the file not counted; default 20. */
  maxFields?: number;
  /** The only part name that may carry a file; default "file". */
  fileField?: string;
  /**
   * Gives up reading when aborted (e.g. a deadline for slow clients): the
   * body is cancelled and the signal's reason thrown.
   */
  signal?: AbortSignal;
}

/** The request body is not multipart/form-data at all. */
export class NotMultipartError extends ValidationError {
  override name = "NotMultipartError";
  constructor(message = "the request body is not multipart/form-data") {
    super(message, [{ path: "content-type", message: "expected multipart/form-data" }]);
  }
}

const DASH = 0x2d;
const MAX_PREAMBLE_BYTES = 64 * 1024;
/** Per part beyond its content: busboy's 16 KiB header cap and the delimiter line. */
const PART_OVERHEAD_BYTES = 17 * 1024;
/** Small network pieces of the file are packed into blocks this big. */
const STAGE_BYTES = 64 * 1024;
const BOUNDARY_RE = /^[0-9A-Za-z'()+_,\-./:=? ]{0,69}[0-9A-Za-z'()+_,\-./:=?]$/;
const SAFE_NAME_RE = /^[A-Za-z0-9_.\-[\]]{1,64}$/;
/** What busboy's lenient decoders put where bytes were not valid in the declared charset. */
const REPLACEMENT = "\uFFFD";

const invalid = (message: string, path = "body"): ValidationError =>
  new ValidationError(message, [{ path, message }]);

/** A field name fit for an error path; client-chosen names could carry anything. */
const pathFor = (name: string): string => SAFE_NAME_RE.test(name) ? name : "field";

type Limits = Required<Omit<MultipartOptions, "signal">>;

const resolveLimits = (opts: MultipartOptions): Limits => {
  const limits: Limits = {
    maxFileBytes: opts.maxFileBytes,
    maxFieldBytes: opts.maxFieldBytes ?? 8 * 1024,
    maxFields: opts.maxFields ?? 20,
    fileField: opts.fileField ?? "file",
  };
  for (const key of ["maxFileBytes", "maxFieldBytes", "maxFields"] as const) {
    const n = limits[key];
    if (!Number.isSafeInteger(n) || n < 0) throw new RangeError(`${key} must be an integer >= 0`);
  }
  return limits;
};

/** The boundary of a multipart/form-data Content-Type, as busboy will read it. */
const boundaryOf = (contentType: string): string => {
  const parsed = busboyContentType(contentType) as
    | { type: string; subtype: string; params: Record<string, string | undefined> }
    | undefined;
  if (parsed?.type !== "multipart" || parsed.subtype !== "form-data") {
    throw new NotMultipartError();
  }
  const boundary = parsed.params.boundary;
  if (boundary === undefined) throw invalid("missing multipart boundary", "content-type");
  if (!BOUNDARY_RE.test(boundary)) throw invalid("invalid multipart boundary", "content-type");
  return boundary;
};

/** streamsearch's callback: bytes that are not the needle, then whether the needle followed. */
type SearchCallback = (
  isMatch: boolean,
  data: Buffer | undefined,
  start: number,
  end: number,
) => void;

/**
 * Finds the delimiters busboy looks for, with the search busboy uses, to learn
 * what busboy does not tell: where the preamble ends (bounded), how many parts
 * were opened (busboy skips a part it cannot read silently), and where the
 * closing delimiter is, so the epilogue is never read.
 */
class Delimiters {
  /** Delimiters that open a part, readable or not. */
  opened = 0;
  closed = false;
  private preamble = 0;
  /** Bytes seen after the last delimiter while they cannot yet tell opening from closing. */
  private after: number[] | null = null;
  private readonly search: { push(chunk: Buffer): void };

  constructor(boundary: string) {
    const found: SearchCallback = (isMatch, data, start, end) => {
      if (data) this.follow(data, start, end);
      if (!isMatch || this.closed) return;
      // A delimiter right after another: the first was not followed by "--".
      if (this.after !== null) this.opened++;
      this.after = [];
    };
    this.search = new StreamSearch(Buffer.from(`\r\n--${boundary}`), found);
    // A virtual CRLF lets the first delimiter match like every later one, as in busboy.
    this.search.push(Buffer.from("\r\n"));
  }

  push(chunk: Buffer): void {
    if (this.closed) return;
    this.search.push(chunk);
    if (this.opened === 0 && this.after === null && this.preamble > MAX_PREAMBLE_BYTES) {
      throw invalid("no multipart boundary found in the body");
    }
  }

  private follow(data: Buffer, start: number, end: number): void {
    if (this.after === null) {
      if (this.opened === 0) this.preamble += end - start;
      return;
    }
    for (let i = start; i < end && this.after.length < 2; i++) this.after.push(data[i]!);
    if (this.after.length < 2) return;
    if (this.after[0] === DASH && this.after[1] === DASH) this.closed = true;
    else this.opened++;
    this.after = null;
  }
}

/**
 * Collects the file and hashes it as it goes. Large pieces are kept by
 * reference; small ones (tiny network chunks) are packed into blocks so a
 * trickled upload does not become millions of tiny arrays.
 */
class FileSink {
  hashMs = 0;
  size = 0;
  private kept: Uint8Array[] = [];
  private stage: Uint8Array | null = null;
  private staged = 0;
  private readonly hash = createHash("sha256");

  constructor(
    readonly field: string,
    readonly filename: string | null,
    readonly declaredType: string | null,
  ) {}

  write(bytes: Uint8Array): void {
    this.size += bytes.length;
    if (bytes.length >= STAGE_BYTES / 4) {
      this.flush();
      this.keep(bytes);
      return;
    }
    if (this.stage === null || this.staged + bytes.length > this.stage.length) {
      this.flush();
      this.stage = new Uint8Array(STAGE_BYTES);
    }
    this.stage.set(bytes, this.staged);
    this.staged += bytes.length;
  }

  /** The whole file as one exactly-sized array of its own, and its digest. */
  result(): UploadedFile {
    this.flush();
    const bytes = new Uint8Array(this.size);
    let at = 0;
    for (const piece of this.kept) {
      bytes.set(piece, at);
      at += piece.length;
    }
    this.kept = [];
    const t0 = performance.now();
    const sha256 = this.hash.digest("hex");
    this.hashMs += performance.now() - t0;
    const { field, filename, declaredType, size } = this;
    return { field, filename, declaredType, bytes, size, sha256 };
  }

  private flush(): void {
    if (this.stage === null || this.staged === 0) return;
    this.keep(this.stage.subarray(0, this.staged));
    this.stage = null;
    this.staged = 0;
  }

  private keep(bytes: Uint8Array): void {
    this.kept.push(bytes);
    const t0 = performance.now();
    this.hash.update(bytes);
    this.hashMs += performance.now() - t0;
  }
}

/**
 * One busboy parse with our rules on top. Event handlers only record the
 * first refusal; {@link write} and {@link end} throw it, so the caller cancels
 * the body at once.
 */
class Form {
  readonly fields: Record<string, string> = {};
  file: FileSink | null = null;
  private failure: Error | null = null;
  /** Parts busboy reported, as a file or a field. */
  private reported = 0;
  private bytes = 0;
  private readonly maxBodyBytes: number;
  private readonly delimiters: Delimiters;
  private readonly parser: busboy.Busboy;
  private readonly finished: Promise<void>;

  constructor(contentType: string, private readonly limits: Limits) {
    const boundary = boundaryOf(contentType);
    this.delimiters = new Delimiters(boundary);
    // Parts busboy skips, and the rest of an oversize field, are read through:
    // this bounds them by what a valid form could hold.
    this.maxBodyBytes = limits.maxFileBytes + MAX_PREAMBLE_BYTES +
      (limits.maxFields + 1) * (limits.maxFieldBytes + PART_OVERHEAD_BYTES);
    this.parser = busboy({
      headers: { "content-type": contentType },
      // sanitizeFilename takes the last path segment; busboy would turn ".." into "".
      preservePath: true,
      defParamCharset: "utf8",
      // busboy truncates at its limits and flags it; one byte more tells "at" from "over".
      limits: {
        fileSize: limits.maxFileBytes + 1,
        fieldSize: limits.maxFieldBytes + 1,
        fields: limits.maxFields,
        files: 1,
      },
    });
    const guard = <A extends unknown[]>(f: (...args: A) => void) => (...args: A) => {
      try {
        f(...args);
      } catch (err) {
        this.fail(err as Error);
      }
    };
    this.parser.on("field", guard((name, value, info) => this.onField(name, value, info)));
    this.parser.on("file", guard((name, stream, info) => this.onFile(name, stream, info)));
    this.parser.on(
      "fieldsLimit",
      () => this.fail(invalid(`more than ${limits.maxFields} form fields`, "fields")),
    );
    this.parser.on(
      "filesLimit",
      () => this.fail(invalid("more than one file part", limits.fileField)),
    );
    this.finished = new Promise((resolve) => {
      this.parser.once("finish", resolve);
      this.parser.on("error", (err: Error) => {
        this.fail(this.explain(err));
        resolve();
      });
    });
  }

  get closed(): boolean {
    return this.delimiters.closed;
  }

  async write(chunk: Uint8Array): Promise<void> {
    this.bytes += chunk.length;
    if (this.bytes > this.maxBodyBytes) {
      throw new UploadRejectedError("too_large", `the body exceeds ${this.maxBodyBytes} bytes`);
    }
    const buf = Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
    this.delimiters.push(buf);
    await new Promise<void>((resolve) => this.parser.write(buf, () => resolve()));
    if (this.failure) throw this.failure;
  }

  /** Ends the parse; throws its first refusal, or for a part busboy skipped. */
  async end(): Promise<void> {
    this.parser.end();
    await this.finished;
    if (this.failure) throw this.failure;
    if (this.reported < this.delimiters.opened) {
      throw invalid("unreadable part: malformed boundary line or Content-Disposition header");
    }
  }

  destroy(): void {
    this.parser.destroy();
  }

  private fail(err: Error): void {
    this.failure ??= err;
  }

  /** busboy's own errors, in our words. */
  private explain(err: Error): ValidationError {
    if (err.message === "Malformed part header") return invalid("malformed part header");
    if (err.message !== "Unexpected end of form") return invalid("malformed multipart body");
    return this.delimiters.opened === 0
      ? invalid("no multipart boundary found in the body")
      : invalid("the multipart body has no closing boundary");
  }

  private onField(name: string | undefined, value: string, info: busboy.FieldInfo): void {
    this.reported++;
    if (name === undefined) throw invalid("malformed Content-Disposition header");
    const path = pathFor(name);
    // busboy decides by the filename alone, so a file part without one comes as text.
    if (name === this.limits.fileField) throw invalid("the file part has no filename", path);
    if (info.valueTruncated) {
      throw invalid(`a form field exceeds ${this.limits.maxFieldBytes} bytes`, path);
    }
    if (value.includes(REPLACEMENT)) throw invalid("a form field is not valid UTF-8", path);
    if (Object.hasOwn(this.fields, name)) throw invalid("duplicate form field", path);
    // defineProperty: a field named "__proto__" must stay a plain own property.
    Object.defineProperty(this.fields, name, {
      value,
      enumerable: true,
      writable: true,
      configurable: true,
    });
  }

  private onFile(
    name: string | undefined,
    stream: NodeJS.ReadableStream & { truncated?: boolean },
    info: busboy.FileInfo,
  ): void {
    this.reported++;
    // busboy reports its own errors on the form; this keeps them off the file stream's listeners.
    stream.on("error", () => {});
    if (name !== this.limits.fileField) {
      stream.resume();
      throw invalid("unexpected file part", "file");
    }
    if (info.filename?.includes(REPLACEMENT)) {
      stream.resume();
      throw invalid("malformed filename parameter", "content-disposition");
    }
    const filename = info.filename ? sanitizeFilename(info.filename) : null;
    const declared = info.mimeType === "text/plain" ? null : info.mimeType;
    const file = new FileSink(name, filename, declared);
    this.file = file;
    stream.on("data", (bytes: Uint8Array) => file.write(bytes));
    stream.on("limit", () => {
      this.fail(
        new UploadRejectedError("too_large", `the file exceeds ${this.limits.maxFileBytes} bytes`),
      );
    });
  }
}

/** Feeds the body to the form; returns parse milliseconds, hashing included. */
const pump = async (
  reader: ReadableStreamDefaultReader<Uint8Array>,
  form: Form,
  signal?: AbortSignal,
): Promise<number> => {
  let ms = 0;
  for (;;) {
    const { done, value } = await reader.read();
    signal?.throwIfAborted();
    const t0 = performance.now();
    if (done) await form.end();
    else if (value instanceof Uint8Array) await form.write(value);
    else throw new TypeError("multipart body chunks must be Uint8Array");
    ms += performance.now() - t0;
    if (done) return ms;
    // The epilogue is ignored by RFC 2046; stop reading rather than drain it.
    if (form.closed) {
      await reader.cancel();
      const t1 = performance.now();
      await form.end();
      return ms + performance.now() - t1;
    }
  }
};

/**
 * Parses a multipart/form-data body as it streams: text fields plus at most
 * one file, in the part named `fileField` with a filename parameter. The
 * file is SHA-256 hashed on the way in.
 *
 * Throws {@link NotMultipartError} when the content type is not
 * multipart/form-data, `UploadRejectedError("too_large")` as soon as the file
 * passes `maxFileBytes` or the body passes what a valid form could hold, and
 * `ValidationError` for any other malformed or over-limit body. On every
 * error the body stream is cancelled.
 *
 * @example
 * ```ts
 * const upload = await parseMultipart(req.body!, req.headers.get("content-type") ?? "", {
 *   maxFileBytes: 10 * 1024 * 1024,
 * });
 * upload.file?.sha256; // "9f86d0…"
 * ```
 */
export const parseMultipart = async (
  body: ReadableStream<Uint8Array>,
  contentType: string,
  opts: MultipartOptions,
): Promise<ParsedUpload> => {
  const reader = body.getReader();
  // cancelling ends a read that is waiting on a stalled client; pump then throws the reason
  const abort = () => void reader.cancel().catch(() => {});
  opts.signal?.addEventListener("abort", abort, { once: true });
  let form: Form | null = null;
  try {
    opts.signal?.throwIfAborted();
    form = new Form(contentType, resolveLimits(opts));
    let parse = await pump(reader, form, opts.signal);
    const t0 = performance.now();
    const file = form.file?.result() ?? null;
    parse += performance.now() - t0;
    const hash = form.file?.hashMs ?? 0;
    return { fields: form.fields, file, timings: { parse: parse - hash, hash } };
  } catch (err) {
    form?.destroy();
    await reader.cancel().catch(() => {});
    throw err;
  } finally {
    opts.signal?.removeEventListener("abort", abort);
  }
};

// ---------------------------------------------------------------- filenames

const BIDI_CONTROLS = /[\u061C\u200E\u200F\u202A-\u202E\u2066-\u2069]/gu;
const CONTROLS = /\p{Cc}/gu;
const SPACES = /[\s\p{Zs}]+/gu;
// Marks are kept: without them Devanagari, Thai or Arabic names are mangled.
const DISALLOWED = /[^\p{L}\p{M}\p{Nd} ._\-()]/gu;
const EDGE_JUNK = /^[. ]+|[. ]+$/g;
const MAX_FILENAME = 200;
const EXTENSION = /\.[^. ]{1,16}$/u;

/** Cuts to MAX_FILENAME code points, keeping a short extension intact. */
const capLength = (name: string): string => {
  const chars = Array.from(name);
  if (chars.length <= MAX_FILENAME) return name;
  const ext = EXTENSION.exec(name)?.[0] ?? "";
  const stem = chars.slice(0, MAX_FILENAME - Array.from(ext).length).join("");
  return stem.replace(EDGE_JUNK, "") + ext;
};

/**
 * A client filename made safe to store and display: last path segment only
 * (`/` and `\`), no control or bidi-override characters, no leading dots,
 * whitespace collapsed, anything but letters, marks, digits, space and
 * `._-()` replaced by `_`, at most 200 characters with the extension kept,
 * and "file" when nothing is left. Metadata only: never use it as a path.
 *
 * @example
 * ```ts
 * sanitizeFilename("../../etc/passwd"); // "passwd"
 * sanitizeFilename("C:\\scans\\x-ray 1.jpg"); // "x-ray 1.jpg"
 * ```
 */
export const sanitizeFilename = (name: string): string => {
  const base = name.split(/[\\/]/).pop() ?? "";
  const cleaned = base.normalize("NFC")
    .replace(CONTROLS, "")
    .replace(BIDI_CONTROLS, "")
    .replace(SPACES, " ")
    .replace(DISALLOWED, "_")
    .replace(EDGE_JUNK, "");
  return capLength(cleaned) || "file";
};
