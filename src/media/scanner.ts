/**
 * Malware scanning of uploads through clamd's INSTREAM protocol.
 *
 * Fail closed: every failure (unreachable, timeout, an answer we do not
 * understand, clamd's own size limit) throws {@link ScannerUnavailableError};
 * a scan never resolves "clean" unless clamd said `stream: OK`.
 *
 * Messages reach problem responses (UnavailableError maps to 503), so they
 * carry neither file bytes nor the scanner's address: the `failure` enum and
 * `cause` are for logs.
 */
import { ConfigError } from "../config.ts";
import { UnavailableError } from "../errors.ts";

/** What a scanner says about one file. */
export type ScanResult = { status: "clean" } | { status: "infected"; signature: string };

/** A malware scanner; `scan` throws rather than guess when it cannot answer. */
export interface Scanner {
  /** Short, stable name recorded with scan results (e.g. `clamd`). */
  readonly name: string;
  /** Scans one file, given whole or as a stream of chunks. */
  scan(data: Uint8Array | AsyncIterable<Uint8Array>): Promise<ScanResult>;
  /** Whether the scanner answers; never throws. */
  ping(): Promise<boolean>;
}

/** Why a scan could not be completed. */
export type ScannerFailure = "connect" | "io" | "timeout" | "protocol" | "size_limit";

/** The scanner could not give a verdict; the upload must be refused, never passed. */
export class ScannerUnavailableError extends UnavailableError {
  override name = "ScannerUnavailableError";
  constructor(readonly failure: ScannerFailure, message: string, options?: ErrorOptions) {
    super(message, options);
  }
}

/** Where clamd listens. */
export type ClamdEndpoint =
  | { transport: "tcp"; hostname: string; port: number }
  | { transport: "unix"; path: string };

/** Tuning for {@link ClamdScanner}; the defaults suit uploads of up to ~25 MB. */
export interface ClamdScannerOptions {
  /** Deadline for one call (connect, upload and verdict), in ms. Default 30 000. */
  timeoutMs?: number;
  /** Bytes per INSTREAM chunk. Default 64 KiB. */
  chunkSize?: number;
}

const DEFAULT_TIMEOUT_MS = 30_000;
const DEFAULT_CHUNK_SIZE = 64 * 1024;
/** clamd's replies are one short line; anything longer is not clamd. */
const MAX_REPLY_BYTES = 4096;

const encoder = new TextEncoder();
const INSTREAM = encoder.encode("zINSTREAM\0");
const PING = encoder.encode("zPING\0");

/** Marks an error thrown by the caller's data source, so it is not blamed on clamd. */
class SourceError extends Error {}

/**
 * Scans with clamd over TCP or a Unix socket, one connection per call.
 *
 * @example
 * ```ts
 * const scanner = new ClamdScanner({ transport: "tcp", hostname: "127.0.0.1", port: 3310 });
 * const result = await scanner.scan(bytes); // throws ScannerUnavailableError if clamd is down
 * if (result.status === "infected") reject("malware");
 * ```
 */
export class ClamdScanner implements Scanner {
  readonly name = "clamd";
  readonly #endpoint: ClamdEndpoint;
  readonly #timeoutMs: number;
  readonly #chunkSize: number;

  constructor(endpoint: ClamdEndpoint, options: ClamdScannerOptions = {}) {
    const { timeoutMs = DEFAULT_TIMEOUT_MS, chunkSize = DEFAULT_CHUNK_SIZE } = options;
    if (!(timeoutMs > 0) || !Number.isFinite(timeoutMs)) {
      throw new RangeError("ClamdScanner: timeoutMs must be a positive number");
    }
    if (!Number.isInteger(chunkSize) || chunkSize < 1 || chunkSize > 0xffff_ffff) {
      throw new RangeError("ClamdScanner: chunkSize must be a positive 32-bit integer");
    }
    this.#endpoint = endpoint;
    this.#timeoutMs = timeoutMs;
    this.#chunkSize = chunkSize;
  }

  /** Streams `data` to clamd; resolves only on a verdict, throws on anything else. */
  async scan(data: Uint8Array | AsyncIterable<Uint8Array>): Promise<ScanResult> {
    const reply = await this.#session((conn) => this.#instream(conn, data));
    return parseScanReply(reply);
  }

  /** Sends `zPING`; true only if clamd answers `PONG` within the deadline. */
  async ping(): Promise<boolean> {
    try {
      const reply = await this.#session(async (conn) => {
        await writeAll(conn, PING);
        return await readReply(conn);
      });
      return reply === "PONG";
    } catch {
      return false;
    }
  }

  async #instream(conn: Deno.Conn, data: Uint8Array | AsyncIterable<Uint8Array>) {
    await writeAll(conn, INSTREAM);
    try {
      await sendChunks(conn, chunked(data, this.#chunkSize), this.#chunkSize);
    } catch (err) {
      // clamd answers and hangs up mid-upload when StreamMaxLength is hit; its
      // reply explains the broken pipe better than the pipe does.
      if (err instanceof SourceError) throw err;
      const early = await readReply(conn).catch(() => "");
      if (early.endsWith("ERROR")) return early;
      throw err;
    }
    return await readReply(conn);
  }

  /** Runs one exchange on a fresh connection under the deadline, mapping failures. */
  async #session<T>(talk: (conn: Deno.Conn) => Promise<T>): Promise<T> {
    let conn: Deno.Conn | undefined;
    let timer: ReturnType<typeof setTimeout> | undefined;
    let expired = false;
    let connected = false;
    const deadline = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        expired = true;
        reject(
          new ScannerUnavailableError(
            "timeout",
            `clamd gave no verdict within ${this.#timeoutMs} ms`,
          ),
        );
      }, this.#timeoutMs);
    });
    const work = (async () => {
      const c = await connect(this.#endpoint);
      // The deadline may have passed while connecting; nobody will close it then.
      if (expired) {
        closeQuietly(c);
        throw new Error("connected after the deadline");
      }
      conn = c;
      connected = true;
      return await talk(c);
    })();
    // Once the deadline wins, the abandoned exchange fails on the closed socket.
    work.catch(() => {});
    try {
      return await Promise.race([work, deadline]);
    } catch (err) {
      throw toScannerError(err, connected);
    } finally {
      clearTimeout(timer);
      if (conn) closeQuietly(conn);
    }
  }
}

/**
 * Builds the scanner named by a URL: `tcp://host:port` or
 * `unix:///path/to/clamd.ctl`. Undefined or empty means no scanner is
 * configured (null). Anything else throws {@link ConfigError}, at start-up.
 *
 * @example
 * ```ts
 * const scanner = scannerFromUrl(Deno.env.get("CHARTLOG_CLAMD_URL"));
 * ```
 */
export const scannerFromUrl = (
  url: string | undefined,
  options: ClamdScannerOptions = {},
): Scanner | null => {
  if (url === undefined || url.trim() === "") return null;
  return new ClamdScanner(parseClamdUrl(url.trim()), options);
};

const URL_FORMS = "expected tcp://host:port or unix:///absolute/path/to/clamd.ctl";

/** Parses a clamd URL into an endpoint; throws ConfigError naming what is wrong. */
export const parseClamdUrl = (url: string): ClamdEndpoint => {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new ConfigError(`clamd URL is not a URL; ${URL_FORMS}`);
  }
  if (u.username || u.password || u.search || u.hash) {
    throw new ConfigError(`clamd URL must not carry credentials, query or fragment; ${URL_FORMS}`);
  }
  if (u.protocol === "tcp:") return parseTcp(u);
  if (u.protocol === "unix:") return parseUnix(u);
  throw new ConfigError(`clamd URL has unsupported scheme "${u.protocol}"; ${URL_FORMS}`);
};

const parseTcp = (u: URL): ClamdEndpoint => {
  if (!u.hostname) throw new ConfigError(`clamd URL has no host; ${URL_FORMS}`);
  if (!u.port) {
    throw new ConfigError(`clamd URL has no port (clamd's is usually 3310); ${URL_FORMS}`);
  }
  if (u.pathname !== "" && u.pathname !== "/") {
    throw new ConfigError(`a tcp:// clamd URL takes no path; ${URL_FORMS}`);
  }
  const port = Number(u.port);
  if (!Number.isInteger(port) || port < 1 || port > 65535) {
    throw new ConfigError(`clamd URL port must be 1-65535; ${URL_FORMS}`);
  }
  return { transport: "tcp", hostname: u.hostname, port };
};

const parseUnix = (u: URL): ClamdEndpoint => {
  // unix://var/run/x parses "var" as a host: a relative path in disguise.
  if (u.host) {
    throw new ConfigError(
      `a unix:// clamd URL needs an absolute path (three slashes); ${URL_FORMS}`,
    );
  }
  const path = decodeURIComponent(u.pathname);
  if (!path.startsWith("/") || path.endsWith("/")) {
    throw new ConfigError(`a unix:// clamd URL needs the socket's file path; ${URL_FORMS}`);
  }
  return { transport: "unix", path };
};

/** Interprets an INSTREAM reply; anything but OK or FOUND is an error. */
const parseScanReply = (reply: string): ScanResult => {
  if (reply === "stream: OK") return { status: "clean" };
  const found = /^stream: ([\x20-\x7e]{1,200}) FOUND$/.exec(reply);
  if (found?.[1]) return { status: "infected", signature: found[1] };
  if (/size limit exceeded/i.test(reply)) {
    throw new ScannerUnavailableError("size_limit", "clamd refused the file: stream size limit");
  }
  // Only clamd's own short error lines are quoted: a stranger on the port
  // might echo the uploaded bytes back.
  const detail = /^[\x20-\x7e]{1,200} ERROR$/.test(reply) ? `: ${reply}` : "";
  throw new ScannerUnavailableError("protocol", `clamd sent an unexpected reply${detail}`);
};

const connect = (endpoint: ClamdEndpoint): Promise<Deno.Conn> =>
  endpoint.transport === "tcp"
    ? Deno.connect({ hostname: endpoint.hostname, port: endpoint.port })
    : Deno.connect({ transport: "unix", path: endpoint.path });

/** Re-splits the caller's chunks to at most `size` bytes, dropping empty ones (a zero length ends the stream). */
async function* chunked(
  data: Uint8Array | AsyncIterable<Uint8Array>,
  size: number,
): AsyncGenerator<Uint8Array> {
  const pieces = data instanceof Uint8Array ? [data] : data;
  for await (const piece of pieces) {
    for (let at = 0; at < piece.length; at += size) yield piece.subarray(at, at + size);
  }
}

/** Writes each chunk with its 4-byte big-endian length, then the zero-length terminator. */
const sendChunks = async (
  conn: Deno.Conn,
  chunks: AsyncGenerator<Uint8Array>,
  chunkSize: number,
): Promise<void> => {
  const frame = new Uint8Array(4 + chunkSize);
  const view = new DataView(frame.buffer);
  for (;;) {
    let next: IteratorResult<Uint8Array>;
    try {
      next = await chunks.next();
    } catch (err) {
      throw new SourceError("the data source failed", { cause: err });
    }
    if (next.done) break;
    view.setUint32(0, next.value.length);
    frame.set(next.value, 4);
    try {
      await writeAll(conn, frame.subarray(0, 4 + next.value.length));
    } catch (err) {
      await chunks.return(undefined).catch(() => {});
      throw err;
    }
  }
  await writeAll(conn, new Uint8Array(4));
};

const writeAll = async (conn: Deno.Conn, bytes: Uint8Array): Promise<void> => {
  for (let off = 0; off < bytes.length;) off += await conn.write(bytes.subarray(off));
};

/** Reads one NUL-terminated reply (or up to EOF) and returns it without the NUL. */
const readReply = async (conn: Deno.Conn): Promise<string> => {
  const buf = new Uint8Array(MAX_REPLY_BYTES);
  let len = 0;
  for (;;) {
    const nul = buf.subarray(0, len).indexOf(0);
    if (nul >= 0) return new TextDecoder().decode(buf.subarray(0, nul));
    if (len === buf.length) {
      throw new ScannerUnavailableError("protocol", "clamd reply too long");
    }
    const n = await conn.read(buf.subarray(len));
    if (n === null) break;
    len += n;
  }
  if (len === 0) throw new ScannerUnavailableError("protocol", "clamd closed without a reply");
  return new TextDecoder().decode(buf.subarray(0, len)).trimEnd();
};

const toScannerError = (err: unknown, connected: boolean): unknown => {
  if (err instanceof SourceError) return err.cause;
  if (err instanceof ScannerUnavailableError) return err;
  return connected
    ? new ScannerUnavailableError("io", "clamd connection failed mid-scan", { cause: err })
    : new ScannerUnavailableError("connect", "clamd unreachable", { cause: err });
};

const closeQuietly = (conn: Deno.Conn): void => {
  try {
    conn.close();
  } catch {
    // already closed
  }
};
