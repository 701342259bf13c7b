/**
 * The `media` section of `deno task bench`: what one photo upload costs. On a
 * fresh PostgreSQL database and a temporary blob directory (both removed at
 * the end) it uploads a generated ~10 MB 4000×3000 JPEG to an encounter
 * through the HTTP app (`POST /v1/encounters/:id/media`), then measures each
 * step of the pipeline alone on the same input, then 4 clients uploading at
 * once. Prints figures; never asserts on time.
 *
 * Requests go to the Hono app in process (`app.request`), as in the patients
 * section. The multipart body is built once and sent each time as a stream
 * of fresh 64 KB chunks, so the streaming parser sees what a socket gives it.
 * No malware scanner is configured, so `scan` costs nothing here.
 *
 * Every upload goes to its own patient's encounter: blobs are addressed per
 * patient and content, so a second upload of the same bytes for one patient
 * would skip encryption and writing. Steps alone run on this thread, one
 * after another; the app decodes in its image worker pool, whose queueing
 * shows up outside the `Server-Timing` steps.
 *
 * Resident memory is sampled every 20 ms; a sample cannot land while the
 * event loop is busy in a long synchronous step, so the kernel's own
 * high-water mark (VmHWM, reset as each phase begins) is shown beside it
 * when /proc allows.
 *
 * Knobs (positive integers):
 *
 *   BENCH_MEDIA_RUNS             sequential uploads, and samples per step alone (default 20)
 *   BENCH_MEDIA_CONCURRENT_EACH  uploads per client in the 4-client workload     (default 5)
 */
import { createHash } from "node:crypto";
import { Image, type JPEGQuality } from "imagescript";
import type { EventMetadata } from "../../events/metadata.ts";
import { registerUser } from "../../src/auth/accounts.ts";
import { SCRYPT_PARAMS } from "../../src/auth/password.ts";
import { loadConfig } from "../../src/config.ts";
import { createApp } from "../../src/http/app.ts";
import { createLogger } from "../../src/logger.ts";
import { imageDimensions, processImage } from "../../src/media/image.ts";
import { parseMultipart } from "../../src/media/multipart.ts";
import { checkType } from "../../src/media/pipeline.ts";
import { openRuntime, type Runtime } from "../../src/runtime.ts";
import {
  BENCH_CONN,
  BENCH_USER_AGENT,
  envInt,
  fmtInt,
  fmtMs,
  fmtSec,
  percentile,
  type SectionDeps,
  table,
  timed,
} from "./stats.ts";
import { PASSWORD } from "../support/users.ts";

const cfg = {
  runs: envInt("BENCH_MEDIA_RUNS", 20),
  concurrentEach: envInt("BENCH_MEDIA_CONCURRENT_EACH", 5),
};
const CLIENTS = 4;
const WARMUP = 2;
const WIDTH = 4000;
const HEIGHT = 3000;
/** Per-pixel noise amplitude and JPEG quality: together they land the file near 10 MB. */
const NOISE = 96;
const QUALITY = 95;
const CHUNK = 64 * 1024;
const MAX_BYTES = 16 * 1024 * 1024;
const RSS_EVERY_MS = 20;
/** End-to-end p50 over the sum of the steps measured alone should be at most this. */
const RATIO_TARGET = 1.2;
/** The steps `Server-Timing` lists, in the order the pipeline runs them. */
const STEPS = [
  "parse",
  "hash",
  "sniff",
  "decode",
  "encode",
  "thumbnail",
  "scan",
  "encrypt",
  "write",
  "append",
] as const;
type Step = (typeof STEPS)[number];

const MiB = 1024 * 1024;
const fmtMiB = (bytes: number) => `${(bytes / MiB).toFixed(1)} MiB`;
const p50 = (xs: readonly number[]) => percentile(xs, 0.5);
const indent = (s: string) => s.split("\n").map((l) => `  ${l}`).join("\n");

// ---------------------------------------------------------------------------
// The test image

/**
 * A photo-like 4000×3000 JPEG: colour gradients, a slow wave, and per-pixel
 * noise from a seeded xorshift, so every run encodes the same ~10 MB file.
 */
const makePhoto = async (): Promise<Uint8Array<ArrayBuffer>> => {
  const img = new Image(WIDTH, HEIGHT);
  const px = img.bitmap;
  let s = 0x1234567;
  for (let y = 0; y < HEIGHT; y++) {
    const g = (y * 255) / HEIGHT, wy = Math.cos(y / 140);
    for (let x = 0, i = y * WIDTH * 4; x < WIDTH; x++, i += 4) {
      s ^= s << 13;
      s ^= s >>> 17;
      s ^= s << 5;
      const n = ((s >>> 0) / 4294967296 - 0.5) * NOISE;
      // the bitmap is a Uint8ClampedArray: values clamp and round on store
      px[i] = (x * 255) / WIDTH + n;
      px[i + 1] = g + n;
      px[i + 2] = 128 + 60 * Math.sin(x / 180) * wy + n;
      px[i + 3] = 255;
    }
  }
  return await img.encodeJPEG(QUALITY as JPEGQuality) as Uint8Array<ArrayBuffer>;
};

// ---------------------------------------------------------------------------
// Memory

/**
 * The kernel's peak RSS of this process (VmHWM), then reset when `reset`:
 * writing 5 to clear_refs resets it (Linux 4.0+). Null where /proc does not
 * allow it.
 */
const kernelPeakRss = (reset = false): number | null => {
  try {
    const m = /VmHWM:\s+(\d+) kB/.exec(Deno.readTextFileSync("/proc/self/status"));
    if (reset) Deno.writeTextFileSync("/proc/self/clear_refs", "5");
    return m ? Number(m[1]) * 1024 : null;
  } catch {
    return null;
  }
};

/**
 * Resident set size per phase: sampled on a timer and at every `sample()`
 * call, and the kernel's high-water mark, reset as each phase begins.
 */
class RssSampler {
  readonly before = Deno.memoryUsage().rss;
  /** Phase → [sampled peak, kernel peak or null]. */
  readonly phases = new Map<string, [number, number | null]>();
  private phase: string;
  private readonly timer: ReturnType<typeof setInterval>;

  constructor(first: string) {
    this.phase = first;
    kernelPeakRss(true);
    this.sample();
    this.timer = setInterval(() => this.sample(), RSS_EVERY_MS);
  }

  /** Ends the current phase and starts `next` (null: stop sampling). */
  enter(next: string | null): void {
    if (this.phase === "") return;
    this.sample();
    const hwm = kernelPeakRss(true);
    const [peak] = this.phases.get(this.phase)!;
    this.phases.set(this.phase, [peak, hwm]);
    if (next === null) {
      clearInterval(this.timer);
      this.phase = "";
      return;
    }
    this.phase = next;
    this.sample();
  }

  sample(): void {
    if (this.phase === "") return;
    const rss = Deno.memoryUsage().rss;
    const [peak, hwm] = this.phases.get(this.phase) ?? [0, null];
    if (rss > peak) this.phases.set(this.phase, [rss, hwm]);
  }

  /** The highest sampled and kernel peaks over every phase. */
  peaks(): { sampled: number; kernel: number | null } {
    const all = [...this.phases.values()];
    const kernel = all.map(([, k]) => k).filter((k): k is number => k !== null);
    return {
      sampled: Math.max(this.before, ...all.map(([p]) => p)),
      kernel: kernel.length ? Math.max(...kernel) : null,
    };
  }
}

// ---------------------------------------------------------------------------
// Requests

type App = ReturnType<typeof createApp>;

/** The body as a socket would deliver it: fresh 64 KB chunks, one per read. */
const chunked = (bytes: Uint8Array): ReadableStream<Uint8Array> => {
  let at = 0;
  return new ReadableStream<Uint8Array>({
    pull(controller) {
      if (at >= bytes.length) return controller.close();
      controller.enqueue(bytes.slice(at, at + CHUNK));
      at += CHUNK;
    },
  }, { highWaterMark: 0 });
};

/** `name;dur=1.2, other;dur=3.4` → step → milliseconds. */
const parseServerTiming = (header: string): Map<string, number> => {
  const out = new Map<string, number>();
  for (const entry of header.split(",")) {
    const [name, ...params] = entry.trim().split(";");
    const dur = params.map((p) => p.trim()).find((p) => p.startsWith("dur="));
    if (name && dur) out.set(name.trim(), Number(dur.slice(4)));
  }
  return out;
};

interface Upload {
  ms: number;
  steps: Map<string, number>;
}

/** One multipart upload of `body` to an encounter; throws unless 201. */
const uploader =
  (app: App, token: string, body: Body) => async (encounterId: string): Promise<Upload> => {
    const t0 = performance.now();
    const res = await app.request(
      new Request(`http://localhost/v1/encounters/${encounterId}/media`, {
        method: "POST",
        headers: {
          authorization: `Bearer ${token}`,
          "user-agent": BENCH_USER_AGENT,
          "content-type": body.contentType,
          "content-length": String(body.bytes.length),
        },
        body: chunked(body.bytes),
      }),
      undefined,
      BENCH_CONN,
    );
    const json = await res.json();
    const ms = performance.now() - t0;
    if (res.status !== 201) throw new Error(`upload failed: ${res.status} ${JSON.stringify(json)}`);
    return { ms, steps: parseServerTiming(res.headers.get("server-timing") ?? "") };
  };

interface Body {
  bytes: Uint8Array<ArrayBuffer>;
  contentType: string;
}

/** The multipart body of a photo upload, encoded once by the platform's FormData. */
const multipartBody = async (jpeg: Uint8Array<ArrayBuffer>): Promise<Body> => {
  const form = new FormData();
  form.set("category", "progress");
  form.set("notes", "left heel, week 3");
  form.set("file", new Blob([jpeg], { type: "image/jpeg" }), "IMG_4032.jpg");
  const res = new Response(form);
  const contentType = res.headers.get("content-type");
  if (!contentType) throw new Error("FormData gave no content type");
  return { bytes: new Uint8Array(await res.arrayBuffer()), contentType };
};

// ---------------------------------------------------------------------------
// The clinic

interface Clinic {
  runtime: Runtime;
  app: App;
  token: string;
  practitionerId: string;
  /** Size of the app's image worker pool. */
  imageWorkers: number;
  /** Patients, each with one encounter: `encounters[i]` belongs to `patients[i]`. */
  patients: string[];
  encounters: string[];
}

/**
 * A practitioner and `visits` patients with an encounter each. Blobs are
 * content-addressed per patient, so the same photo uploaded twice for one
 * patient is encrypted and written once; one patient per upload makes every
 * upload do the whole work.
 */
const openClinic = async (deps: SectionDeps, visits: number): Promise<Clinic> => {
  const url = await deps.newPgDatabase();
  const blobDir = await Deno.makeTempDir({ prefix: "chartlog_bench_blobs_" });
  deps.defer(`remove ${blobDir}`, () => Deno.remove(blobDir, { recursive: true }));
  const config = loadConfig({
    DATABASE_URL: url,
    CHARTLOG_MASTER_KEY: btoa(String.fromCharCode(...crypto.getRandomValues(new Uint8Array(32)))),
    CHARTLOG_ENV: "test",
    CHARTLOG_DB_POOL_MAX: String(deps.pool),
    CHARTLOG_BLOB_DIR: blobDir,
    CHARTLOG_MEDIA_MAX_BYTES: String(MAX_BYTES),
    CHARTLOG_MFA_REQUIRED_ROLES: "none",
    CHARTLOG_LOGIN_RATE_PER_MIN: "100000",
    CHARTLOG_ACCESS_TOKEN_TTL_S: "3600",
    CHARTLOG_SESSION_IDLE_TIMEOUT_S: "3600",
    LOG_LEVEL: "silent",
  });
  const runtime = await openRuntime(config, createLogger("silent"), { workers: false });
  deps.defer("close media runtime", () => runtime.close());
  const app = createApp({ config, log: createLogger("silent"), runtime: () => runtime });

  const send = async (token: string | null, method: string, path: string, body: object) => {
    const res = await app.request(path, {
      method,
      headers: {
        "content-type": "application/json",
        "user-agent": BENCH_USER_AGENT,
        ...(token ? { authorization: `Bearer ${token}` } : {}),
      },
      body: JSON.stringify(body),
    }, BENCH_CONN);
    const json = await res.json();
    if (res.status >= 300) throw new Error(`${method} ${path}: ${res.status} ${json.title}`);
    return json;
  };
  const user = async (role: "admin" | "practitioner") => {
    const u = await registerUser(
      runtime.store,
      {
        email: `${role}@clinic.test`,
        name: `Bench ${role}`,
        role,
        password: PASSWORD,
        patientId: null,
      },
      { actorId: "bench-setup" },
      SCRYPT_PARAMS,
    );
    const login = await send(null, "POST", "/v1/auth/login", {
      email: u.email,
      password: PASSWORD,
    });
    return { id: u.id, token: login.accessToken as string };
  };
  const admin = await user("admin");
  const practitioner = await user("practitioner");
  const patients: string[] = [], encounters: string[] = [];
  for (let i = 0; i < visits; i++) {
    const patient = await send(admin.token, "POST", "/v1/patients", {
      mrn: `BENCH-MEDIA-${i + 1}`,
      firstName: "Mira",
      lastName: `Mediafile${i + 1}`,
      dateOfBirth: "1966-06-06",
      gender: "F",
    });
    const encounter = await send(admin.token, "POST", `/v1/patients/${patient.id}/encounters`, {
      practitionerId: practitioner.id,
      startsAt: "2026-12-01T09:00:00Z",
      reason: "wound check",
    });
    patients.push(patient.id);
    encounters.push(encounter.id);
  }
  return {
    runtime,
    app,
    token: practitioner.token,
    practitionerId: practitioner.id,
    imageWorkers: config.imageWorkers,
    patients,
    encounters,
  };
};

// ---------------------------------------------------------------------------
// Steps alone

/** `n` sequential samples of `fn` (milliseconds it reports) after `WARMUP` untimed ones. */
const samples = async <T>(n: number, fn: () => Promise<T>, ms: (r: T, wall: number) => number) => {
  for (let k = 0; k < WARMUP; k++) await fn();
  const out: number[] = [];
  for (let k = 0; k < n; k++) {
    const t0 = performance.now();
    const r = await fn();
    out.push(ms(r, performance.now() - t0));
  }
  return out;
};

interface Alone {
  /** Per pipeline step: the samples of what stands for it measured alone. */
  steps: Map<Step, number[]>;
  /** What the end-to-end time holds besides the `Server-Timing` steps, measured alone. */
  extras: [string, number[]][];
  /** Sizes of the re-encoded image and its thumbnail. */
  storedBytes: number;
  thumbBytes: number;
}

/**
 * Each step on the same input, `n` times, p50 taken later. Steps the
 * pipeline runs twice (encrypt and write: the image and its thumbnail) are
 * measured the same way here; `hash` is the parser's streaming hash plus
 * the SHA-256 of the re-encoded image, as in `Server-Timing`.
 */
const measureAlone = async (c: Clinic, body: Body, n: number): Promise<Alone> => {
  const patientId = c.patients[0]!, encounterId = c.encounters[0]!;
  const parse = () =>
    parseMultipart(chunked(body.bytes), body.contentType, { maxFileBytes: MAX_BYTES });
  const parsed = await parse();
  const file = parsed.file!;
  // one pass gives three figures: the wall time and the parser's own split
  const inner: number[] = [], streamHash: number[] = [];
  const parses = await samples(n, parse, (r, wall) => {
    inner.push(r.timings.parse);
    streamHash.push(r.timings.hash);
    return wall;
  });

  const wallMs = (_: unknown, ms: number) => ms;
  const sniffs = await samples(
    n,
    () => Promise.resolve(checkType("photo", "progress", file)),
    wallMs,
  );
  const dims = await samples(
    n,
    () => Promise.resolve(imageDimensions(file.bytes, "image/jpeg")),
    wallMs,
  );

  const decode: number[] = [], encode: number[] = [], thumb: number[] = [];
  const processed: Awaited<ReturnType<typeof processImage>>[] = [];
  const processWall = await samples(n, async () => {
    const r = await processImage(file.bytes, "image/jpeg", { maxPixels: 50_000_000 });
    processed.push(r);
    if (processed.length > 1) processed.shift(); // keep one: 48 MB of pixels each otherwise
    return r;
  }, (r, wall) => {
    decode.push(r.timings.decode);
    encode.push(r.timings.encode);
    thumb.push(r.timings.thumbnail);
    return wall - r.timings.decode - r.timings.encode - r.timings.thumbnail;
  });
  const img = processed[0]!;
  const stored = img.bytes as Uint8Array<ArrayBuffer>;
  const thumbnail = img.thumbnail as Uint8Array<ArrayBuffer>;
  const sha = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");
  const storedSha = sha(stored), thumbSha = sha(thumbnail);

  const rehash = await samples(n, () => Promise.resolve(sha(stored)), wallMs);

  const { codec } = c.runtime.store;
  const subject = `patient-${patientId}`;
  const encrypt = await samples(n, async () => {
    await codec.encryptBytes(subject, `blob:${storedSha}`, stored);
    await codec.encryptBytes(subject, `blob:${thumbSha}`, thumbnail);
  }, wallMs);

  // a fresh address each time (the sha argument varies), so every put writes
  const fresh = () => createHash("sha256").update(crypto.randomUUID()).digest("hex");
  let lastPut = { main: "", thumb: "" };
  const write = await samples(n, async () => {
    const main = await c.runtime.blobs.put(patientId, fresh(), stored);
    const th = await c.runtime.blobs.put(patientId, fresh(), thumbnail);
    lastPut = { main: main.address, thumb: th.address };
    return main.writeMs + th.writeMs;
  }, (ms) => ms);

  const metadata: EventMetadata = {
    actorId: c.practitionerId,
    actorRole: "practitioner",
    ip: "127.0.0.1",
    userAgent: BENCH_USER_AGENT,
    requestId: crypto.randomUUID(),
  };
  const append = await samples(n, async () => {
    const mediaId = crypto.randomUUID();
    await c.runtime.store.append(`media-${mediaId}`, "no_stream", [{
      type: "MediaUploaded",
      data: {
        mediaId,
        patientId: patientId,
        encounterId: encounterId,
        uploaderId: c.practitionerId,
        kind: "photo",
        category: "progress",
        contentType: "image/jpeg",
        size: stored.length,
        sha256: storedSha,
        blob: lastPut.main,
        uploadSize: file.size,
        uploadSha256: file.sha256,
        width: img.width,
        height: img.height,
        thumbnail: {
          blob: lastPut.thumb,
          size: thumbnail.length,
          sha256: thumbSha,
          ...imageDimensions(thumbnail, "image/jpeg"),
        },
        scan: { status: "not_scanned", scanner: null },
        dicomPatientMismatch: false,
        filename: "IMG_4032.jpg",
        notes: "left heel, week 3",
        dicom: null,
      },
    }], metadata);
  }, wallMs);

  const paired = (a: number[], b: number[]) => a.map((x, i) => x + (b[i] ?? 0));
  return {
    steps: new Map<Step, number[]>([
      ["parse", inner],
      ["hash", paired(streamHash, rehash)],
      ["sniff", sniffs],
      ["decode", decode],
      ["encode", encode],
      ["thumbnail", thumb],
      ["encrypt", encrypt],
      ["write", write],
      ["append", append],
    ]),
    extras: [
      ["parseMultipart wall: parse + hash + stream delivery", parses],
      ["processImage checks before decode (sniff, header, end marker)", processWall],
      ["imageDimensions (header walk)", dims],
    ],
    storedBytes: stored.length,
    thumbBytes: thumbnail.length,
  };
};

// ---------------------------------------------------------------------------

/**
 * The media section. Returns summary lines (the end-to-end/steps ratio,
 * throughput and peak RSS) for main.ts to print after the results table.
 */
export const mediaBench = async (deps: SectionDeps): Promise<string[]> => {
  const n = cfg.runs, total = CLIENTS * cfg.concurrentEach;
  console.log(JSON.stringify({ ...cfg, clients: CLIENTS }));
  const rss = new RssSampler("setup");
  try {
    return await deps.scoped(async () => {
      const g0 = performance.now();
      const jpeg = await makePhoto();
      const genMs = performance.now() - g0;
      const body = await multipartBody(jpeg);
      const mb = (jpeg.length / 1e6).toFixed(1);
      console.log(
        `  test image: ${WIDTH}×${HEIGHT} JPEG, ${fmtInt(jpeg.length)} bytes (${
          (jpeg.length / 1e6).toFixed(2)
        } MB), quality ${QUALITY}, noise ±${NOISE / 2}, generated in ${fmtSec(genMs)}; ` +
          `multipart body ${fmtInt(body.bytes.length)} bytes, sent in ${CHUNK / 1024} KB chunks`,
      );
      const c = await openClinic(deps, WARMUP + n + total);
      const upload = uploader(c.app, c.token, body);
      let visit = 0;
      const next = () => upload(c.encounters[visit++]!);

      // end to end, one at a time
      rss.enter("sequential uploads");
      for (let k = 0; k < WARMUP; k++) await next();
      const seq: Upload[] = [];
      const rssAfter: number[] = [];
      const s0 = performance.now();
      for (let k = 0; k < n; k++) {
        seq.push(await next());
        rss.sample();
        rssAfter.push(Deno.memoryUsage().rss);
      }
      const seqMs = performance.now() - s0;
      const e2e = seq.map((u) => u.ms);

      // each step alone
      rss.enter("steps alone");
      const alone = await measureAlone(c, body, n);

      // 4 clients at once
      rss.enter(`${CLIENTS} concurrent clients`);
      const conc: Upload[] = [];
      const t = await timed(total, CLIENTS, async () => {
        conc.push(await next());
        rss.sample();
      });
      rss.enter(null);

      const stepP50 = (us: readonly Upload[], s: Step) => p50(us.map((u) => u.steps.get(s) ?? 0));
      const stepSum = (us: readonly Upload[]) => STEPS.reduce((a, s) => a + stepP50(us, s), 0);
      const aloneP50 = (s: Step) => {
        const xs = alone.steps.get(s);
        return xs ? p50(xs) : 0;
      };
      const aloneSum = STEPS.reduce((a, s) => a + aloneP50(s), 0);
      const e2eP50 = p50(e2e), concP50 = p50(t.latencies);
      const what: Record<Step, string> = {
        parse: `parseMultipart's parse timing`,
        hash: "parser's streaming SHA-256 + SHA-256 of the re-encoded image",
        sniff: "checkType: sniff, name and type checks, isPolyglot",
        decode: "processImage's decode",
        encode: "processImage's re-encode (JPEG q90)",
        thumbnail: "processImage's 256 px box-filter thumbnail + JPEG",
        scan: "no scanner configured",
        encrypt: "codec.encryptBytes, image + thumbnail (AES-256-GCM)",
        write: "BlobStore.put's write, image + thumbnail: fsync + rename",
        append: "store.append of a MediaUploaded (inline projection)",
      };
      const rows = STEPS.map((s) => [
        s,
        fmtMs(stepP50(seq, s)),
        alone.steps.has(s) ? fmtMs(aloneP50(s)) : "-",
        fmtMs(stepP50(conc, s)),
        what[s],
      ]);
      rows.push(
        ["sum of steps", fmtMs(stepSum(seq)), fmtMs(aloneSum), fmtMs(stepSum(conc)), ""],
        [
          "end to end p50",
          fmtMs(e2eP50),
          "",
          fmtMs(concP50),
          "app.request until the 201's JSON is read",
        ],
        [
          "end to end p90",
          fmtMs(percentile(e2e, 0.9)),
          "",
          fmtMs(percentile(t.latencies, 0.9)),
          "",
        ],
        [
          "outside the steps",
          fmtMs(e2eP50 - stepSum(seq)),
          "",
          fmtMs(concP50 - stepSum(conc)),
          "end to end p50 − sum: auth, queries, body delivery, checks, response",
        ],
      );
      console.log(
        `\n  p50 ms per step: Server-Timing of ${n} sequential uploads (after ${WARMUP} ` +
          `warm-up), each step alone (${n}× after ${WARMUP}), Server-Timing of ` +
          `${CLIENTS} clients × ${cfg.concurrentEach}; one patient per upload. ` +
          `Re-encoded image ${fmtInt(alone.storedBytes)} bytes, thumbnail ` +
          `${fmtInt(alone.thumbBytes)}. The app decodes in ${c.imageWorkers} image workers.\n`,
      );
      console.log(indent(table(
        ["step", "sequential", "alone", `${CLIENTS} clients`, "measured alone as"],
        rows,
        new Set([1, 2, 3]),
      )));
      console.log(`\n  in the end-to-end time but not in Server-Timing, measured alone:\n`);
      console.log(indent(table(
        ["what", "p50 ms"],
        alone.extras.map(([label, xs]) => [label, fmtMs(p50(xs))]),
        new Set([1]),
      )));

      const uploadsPerSec = total / (t.ms / 1000), seqPerSec = n / (seqMs / 1000);
      const mbPerSec = (x: number) => (x * body.bytes.length / 1e6).toFixed(1);
      console.log(`\n  throughput:\n`);
      console.log(indent(table(
        ["workload", "uploads", "time", "uploads/s", "MB/s", "p50 ms", "p90 ms"],
        [
          [
            "sequential",
            String(n),
            fmtSec(seqMs),
            seqPerSec.toFixed(2),
            mbPerSec(seqPerSec),
            fmtMs(e2eP50),
            fmtMs(percentile(e2e, 0.9)),
          ],
          [
            `${CLIENTS} clients × ${cfg.concurrentEach}`,
            String(total),
            fmtSec(t.ms),
            uploadsPerSec.toFixed(2),
            mbPerSec(uploadsPerSec),
            fmtMs(concP50),
            fmtMs(percentile(t.latencies, 0.9)),
          ],
        ],
        new Set([1, 2, 3, 4, 5, 6]),
      )));

      const peaks = rss.peaks();
      console.log(
        `\n  resident memory (before the section ${fmtMiB(rss.before)}; sampled every ` +
          `${RSS_EVERY_MS} ms, and the kernel's high-water mark VmHWM, reset per phase):\n`,
      );
      console.log(indent(table(
        ["phase", "sampled peak", "VmHWM"],
        [...rss.phases].map(([phase, [sampled, kernel]]) => [
          phase,
          fmtMiB(sampled),
          kernel === null ? "n/a" : fmtMiB(kernel),
        ]),
        new Set([1, 2]),
      )));
      const marks = [...new Set([0, Math.floor(n / 2) - 1, n - 1])].filter((k) => k >= 0);
      console.log(
        `\n  RSS after sequential upload ` +
          marks.map((k) => `${k + 1}: ${fmtMiB(rssAfter[k]!)}`).join(", "),
      );

      deps.add({
        workload: `photo upload ${mb} MB x${n}, sequential`,
        backend: "PostgreSQL",
        impl: "Chartlog",
        m: { events: n, appends: n, ms: seqMs, latencies: e2e },
        latencyOf: "upload",
        note: `uploads/s; ${mbPerSec(seqPerSec)} MB/s`,
      });
      deps.add({
        workload: `photo upload ${mb} MB x${total}, ${CLIENTS} clients`,
        backend: "PostgreSQL",
        impl: "Chartlog",
        m: { events: total, appends: total, ms: t.ms, latencies: t.latencies },
        latencyOf: "upload",
        note: `uploads/s; ${mbPerSec(uploadsPerSec)} MB/s`,
      });
      const ratio = e2eP50 / aloneSum;
      return [
        `\n## Media: ${mb} MB ${WIDTH}×${HEIGHT} JPEG uploads\n`,
        `end to end p50 ${fmtMs(e2eP50)} ms vs the steps alone ${fmtMs(aloneSum)} ms: ` +
        `${ratio.toFixed(2)}× (target ≤ ${RATIO_TARGET}×): ` +
        (ratio <= RATIO_TARGET ? "meets target" : "ABOVE target"),
        `${CLIENTS} concurrent clients: ${uploadsPerSec.toFixed(2)} uploads/s, ` +
        `${mbPerSec(uploadsPerSec)} MB/s, p50 ${fmtMs(concP50)} ms`,
        `peak RSS ${fmtMiB(peaks.sampled)} sampled` +
        (peaks.kernel === null ? "" : `, ${fmtMiB(peaks.kernel)} VmHWM`) +
        `; ${fmtMiB(rss.before)} before the section`,
      ];
    });
  } finally {
    rss.enter(null);
  }
};
