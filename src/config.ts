import { z } from "zod";
import { type Role, ROLES } from "../events/user.ts";
import { isEd25519Pkcs8 } from "./audit/checkpoint.ts";

/** Start-up configuration could not be accepted; the message names the variable. */
export class ConfigError extends Error {
  override name = "ConfigError";
}

const LOG_LEVELS = ["fatal", "error", "warn", "info", "debug", "trace", "silent"] as const;

const Env = z.object({
  DATABASE_URL: z.string().refine(
    (v) => /^postgres(ql)?:\/\//.test(v) || v === "memory://" || v.startsWith("pglite://"),
    "must be a postgres:// URL, memory:// or pglite://<directory>",
  ).optional(),
  CHARTLOG_OWNER_DATABASE_URL: z.string().refine(
    (v) => /^postgres(ql)?:\/\//.test(v),
    "must be a postgres:// URL",
  ).optional(),
  CHARTLOG_APP_DB_PASSWORD: z.string().optional(),
  CHARTLOG_ANALYST_DB_PASSWORD: z.string().optional(),
  PORT: z.coerce.number().int().min(0).max(65535).default(8080),
  CHARTLOG_HTTP: z.enum(["on", "off"]).default("on"),
  CHARTLOG_LISTEN_HOST: z.string().min(1).default("0.0.0.0"),
  CHARTLOG_ENV: z.enum(["development", "production", "test"]).default("development"),
  CHARTLOG_DATA_DIR: z.string().min(1).default("./data"),
  CHARTLOG_MASTER_KEY: z.string().refine(
    (v) => {
      try {
        return atob(v).length === 32;
      } catch {
        return false;
      }
    },
    "must be 32 bytes, base64-encoded (e.g. `openssl rand -base64 32`)",
  ).optional(),
  CHARTLOG_CHECKPOINT_KEY: z.string().refine(
    (v) => {
      try {
        return isEd25519Pkcs8(Uint8Array.from(atob(v), (c) => c.charCodeAt(0)));
      } catch {
        return false;
      }
    },
    "must be an Ed25519 private key, PKCS#8 DER, base64-encoded " +
      "(`openssl genpkey -algorithm ed25519 -outform DER | base64 -w0`)",
  ).optional(),
  CHARTLOG_CHECKPOINT_EVENTS: z.coerce.number().int().min(1).max(10_000_000).default(1000),
  CHARTLOG_CHECKPOINT_SECONDS: z.coerce.number().int().min(1).max(86_400).default(60),
  LOG_LEVEL: z.enum(LOG_LEVELS).default("info"),
  CHARTLOG_CORS_ORIGINS: z.string().default(""),
  CHARTLOG_MAX_BODY_BYTES: z.coerce.number().int().positive().default(10 * 1024 * 1024),
  CHARTLOG_DB_POOL_MAX: z.coerce.number().int().min(1).max(500).default(10),
  CHARTLOG_IDLE_TX_TIMEOUT_MS: z.coerce.number().int().min(1000).default(60_000),
  CHARTLOG_ACCESS_TOKEN_TTL_S: z.coerce.number().int().min(30).max(86_400).default(300),
  CHARTLOG_SESSION_IDLE_TIMEOUT_S: z.coerce.number().int().min(60).max(86_400).default(900),
  CHARTLOG_LOGIN_RATE_PER_MIN: z.coerce.number().int().min(1).default(20),
  CHARTLOG_TRUST_PROXY: z.enum(["true", "false"]).default("false"),
  // a shared secret: checked for length only, never echoed (see loadConfig's errors)
  CHARTLOG_METRICS_TOKEN: z.string().min(16, "must be at least 16 characters").max(1024)
    .regex(/^[\x21-\x7e]+$/, "must be printable ASCII without spaces").optional(),
  // default: off in production, on elsewhere (see loadConfig)
  CHARTLOG_SIGNUP: z.enum(["on", "off"]).optional(),
  CHARTLOG_MFA_REQUIRED_ROLES: z.string().refine(
    (v) =>
      v === "none" ||
      v.split(",").map((r) => r.trim()).filter(Boolean).every((r) => ROLES.includes(r as Role)),
    `must be "none" or a comma-separated list of roles (${ROLES.join(", ")})`,
  ).default("admin"),
  CHARTLOG_MEDIA_MAX_BYTES: z.coerce.number().int().positive().default(10 * 1024 * 1024),
  CHARTLOG_MEDIA_MAX_PIXELS: z.coerce.number().int().positive().default(50_000_000),
  CHARTLOG_BLOB_DIR: z.string().min(1).optional(),
  CHARTLOG_BODY_TIMEOUT_S: z.coerce.number().int().min(1).max(3600).default(30),
  CHARTLOG_SHUTDOWN_TIMEOUT_S: z.coerce.number().int().min(0).max(3600).default(10),
  CHARTLOG_UPLOAD_TIMEOUT_S: z.coerce.number().int().min(1).max(3600).default(300),
  CHARTLOG_IMAGE_WORKERS: z.coerce.number().int().min(1).max(64).default(2),
  CHARTLOG_IMAGE_QUEUE: z.coerce.number().int().min(0).max(1000).default(8),
  CHARTLOG_CLAMD_TIMEOUT_MS: z.coerce.number().int().min(10).max(600_000).default(30_000),
  CHARTLOG_ENCOUNTER_ACCESS_DAYS: z.coerce.number().int().min(0).max(3650).default(30),
  CHARTLOG_CLAMD_URL: z.string().refine(
    (v) => /^tcp:\/\/(\[[0-9a-fA-F:.]+\]|[^/:[\]]+):\d+\/?$/.test(v) || /^unix:\/\/\/./.test(v),
    "must be tcp://host:port or unix:///path/to/clamd.socket",
  ).optional(),
  // empty is unset (docker compose passes `${CHARTLOG_SMTP_URL:-}` through as "")
  CHARTLOG_SMTP_URL: z.preprocess(
    (v) => v === "" ? undefined : v,
    z.string().refine((v) => {
      try {
        const u = new URL(v);
        return (u.protocol === "smtp:" || u.protocol === "smtps:") && u.hostname !== "";
      } catch {
        return false;
      }
    }, "must be smtp://[user:password@]host[:port] or smtps://…").optional(),
  ),
  CHARTLOG_SMTP_FROM: z.preprocess(
    (v) => v === "" ? undefined : v,
    z.string().max(320).refine(
      (v) => /^[^\r\n<>]*<[^\s@<>]+@[^\s@<>]+>$|^[^\s@<>]+@[^\s@<>]+$/.test(v),
      "must be an address, `no-reply@clinic.example` or `Name <no-reply@clinic.example>`",
    ).default("Chartlog <no-reply@chartlog.invalid>"),
  ),
});

export type Database =
  | { kind: "postgres"; url: string }
  | { kind: "pglite"; dataDir: string };

export interface Config {
  env: "development" | "production" | "test";
  /**
   * `CHARTLOG_HTTP`: false (`off`) runs a worker instance: no HTTP listener,
   * only the background workers (projections, outbox, checkpoints, grant sweeper).
   */
  http: boolean;
  port: number;
  hostname: string;
  dataDir: string;
  database: Database;
  /**
   * `CHARTLOG_OWNER_DATABASE_URL`: the connection that runs migrations (as,
   * or on behalf of, chartlog_owner); null: `DATABASE_URL` does both.
   */
  ownerDatabaseUrl: string | null;
  /** `CHARTLOG_APP_DB_PASSWORD`: set as chartlog_app's password by migrations. */
  appDbPassword: string | null;
  /** `CHARTLOG_ANALYST_DB_PASSWORD`: set as chartlog_analyst's password by migrations. */
  analystDbPassword: string | null;
  masterKey: Uint8Array<ArrayBuffer> | null;
  /** Signs transparency-log checkpoints (Ed25519, PKCS#8 DER); null: generated in development. */
  checkpointKey: Uint8Array | null;
  /** Publish a checkpoint once this many events were appended since the last one… */
  checkpointEvents: number;
  /** …or once this long passed and the log grew by anything but checkpoints. */
  checkpointSeconds: number;
  logLevel: (typeof LOG_LEVELS)[number];
  corsOrigins: string[];
  maxBodyBytes: number;
  dbPoolMax: number;
  idleInTransactionTimeoutMs: number;
  accessTokenTtlSec: number;
  sessionIdleTimeoutSec: number;
  /** Requests per minute per client address on /v1/auth routes. */
  loginRatePerMin: number;
  /** Take the client address from X-Forwarded-For (behind a reverse proxy). */
  trustProxy: boolean;
  /** Self sign-up of (pending) practitioners. */
  signup: boolean;
  /**
   * `CHARTLOG_METRICS_TOKEN`: the bearer token `/metrics` asks for. Null:
   * `/metrics` is open, except in production, where it is off (404).
   */
  metricsToken: string | null;
  /** Roles that must use a second factor; until they enrol they can only enrol. */
  mfaRequiredRoles: Role[];
  /** Largest file an upload may carry, enforced while the body streams in. */
  mediaMaxBytes: number;
  /** Largest image (width × height) the pipeline decodes. */
  mediaMaxPixels: number;
  /** How long any other request body may take to arrive (408 after). */
  bodyTimeoutSec: number;
  /** On SIGTERM, how long in-flight requests may take to finish before the process exits. */
  shutdownTimeoutSec: number;
  /** How long an upload's body may take to arrive (408 after). */
  uploadTimeoutSec: number;
  /** Workers that decode images; at most this many are decoded at once. */
  imageWorkers: number;
  /** Decode jobs that may wait for a worker; past that an upload is 503 with Retry-After. */
  imageQueue: number;
  /** How long clamd may take over one file before the upload is refused (`scan_failed`). */
  clamdTimeoutMs: number;
  /** Where encrypted media blobs live (default `<data dir>/blobs`). */
  blobDir: string;
  /** clamd to scan uploads with; without one, media record `not_scanned`. */
  clamdUrl: string | null;
  /** Days a finished encounter keeps its practitioner related to the patient. */
  encounterAccessDays: number;
  /** The SMTP server the outbox e-mails codes through; null: no e-mail channel. */
  smtpUrl: string | null;
  /** The From of those e-mails. */
  smtpFrom: string;
}

/**
 * Reads and validates the environment. Throws {@link ConfigError} naming
 * every bad variable (never echoing its value: it may be a secret).
 */
export const loadConfig = (env: Record<string, string | undefined>): Config => {
  const given = Object.fromEntries(
    Object.entries(env).filter(([, v]) => v !== undefined && v !== ""),
  ) as Record<string, string>;
  const parsed = Env.safeParse(given);
  const lines = parsed.success
    ? []
    : parsed.error.issues.map((i) => `${i.path.join(".")}: ${i.message}`);
  if (
    parsed.success &&
    parsed.data.CHARTLOG_SESSION_IDLE_TIMEOUT_S <= parsed.data.CHARTLOG_ACCESS_TOKEN_TTL_S
  ) {
    // otherwise a client busy with one access token is idle by the time it must refresh
    lines.push(
      "CHARTLOG_SESSION_IDLE_TIMEOUT_S: must be longer than CHARTLOG_ACCESS_TOKEN_TTL_S",
    );
  }
  if (given.CHARTLOG_ENV === "production" && !given.CHARTLOG_MASTER_KEY) {
    lines.push("CHARTLOG_MASTER_KEY: is required when CHARTLOG_ENV=production");
  }
  if (given.CHARTLOG_ENV === "production" && !given.CHARTLOG_CHECKPOINT_KEY) {
    lines.push("CHARTLOG_CHECKPOINT_KEY: is required when CHARTLOG_ENV=production");
  }
  if (
    given.CHARTLOG_OWNER_DATABASE_URL && !/^postgres(ql)?:\/\//.test(given.DATABASE_URL ?? "")
  ) {
    lines.push("CHARTLOG_OWNER_DATABASE_URL: needs a postgres:// DATABASE_URL");
  }
  if (!parsed.success || lines.length > 0) {
    throw new ConfigError(`invalid configuration:\n  ${lines.join("\n  ")}`);
  }
  const e = parsed.data;
  const url = e.DATABASE_URL;
  const database: Database = !url
    ? { kind: "pglite", dataDir: `${e.CHARTLOG_DATA_DIR}/pglite` }
    : url === "memory://"
    ? { kind: "pglite", dataDir: "memory://" }
    : url.startsWith("pglite://")
    ? { kind: "pglite", dataDir: url.slice("pglite://".length) }
    : { kind: "postgres", url };
  return {
    env: e.CHARTLOG_ENV,
    http: e.CHARTLOG_HTTP === "on",
    port: e.PORT,
    hostname: e.CHARTLOG_LISTEN_HOST,
    dataDir: e.CHARTLOG_DATA_DIR,
    database,
    ownerDatabaseUrl: e.CHARTLOG_OWNER_DATABASE_URL ?? null,
    appDbPassword: e.CHARTLOG_APP_DB_PASSWORD ?? null,
    analystDbPassword: e.CHARTLOG_ANALYST_DB_PASSWORD ?? null,
    masterKey: e.CHARTLOG_MASTER_KEY
      ? Uint8Array.from(atob(e.CHARTLOG_MASTER_KEY), (c) => c.charCodeAt(0))
      : null,
    checkpointKey: e.CHARTLOG_CHECKPOINT_KEY
      ? Uint8Array.from(atob(e.CHARTLOG_CHECKPOINT_KEY), (c) => c.charCodeAt(0))
      : null,
    checkpointEvents: e.CHARTLOG_CHECKPOINT_EVENTS,
    checkpointSeconds: e.CHARTLOG_CHECKPOINT_SECONDS,
    logLevel: e.LOG_LEVEL,
    corsOrigins: e.CHARTLOG_CORS_ORIGINS.split(",").map((s) => s.trim()).filter(Boolean),
    maxBodyBytes: e.CHARTLOG_MAX_BODY_BYTES,
    dbPoolMax: e.CHARTLOG_DB_POOL_MAX,
    idleInTransactionTimeoutMs: e.CHARTLOG_IDLE_TX_TIMEOUT_MS,
    accessTokenTtlSec: e.CHARTLOG_ACCESS_TOKEN_TTL_S,
    sessionIdleTimeoutSec: e.CHARTLOG_SESSION_IDLE_TIMEOUT_S,
    loginRatePerMin: e.CHARTLOG_LOGIN_RATE_PER_MIN,
    trustProxy: e.CHARTLOG_TRUST_PROXY === "true",
    signup: (e.CHARTLOG_SIGNUP ?? (e.CHARTLOG_ENV === "production" ? "off" : "on")) === "on",
    metricsToken: e.CHARTLOG_METRICS_TOKEN ?? null,
    mfaRequiredRoles: e.CHARTLOG_MFA_REQUIRED_ROLES === "none"
      ? []
      : e.CHARTLOG_MFA_REQUIRED_ROLES.split(",").map((r) => r.trim()).filter(Boolean) as Role[],
    mediaMaxBytes: e.CHARTLOG_MEDIA_MAX_BYTES,
    mediaMaxPixels: e.CHARTLOG_MEDIA_MAX_PIXELS,
    blobDir: e.CHARTLOG_BLOB_DIR ?? `${e.CHARTLOG_DATA_DIR}/blobs`,
    imageWorkers: e.CHARTLOG_IMAGE_WORKERS,
    imageQueue: e.CHARTLOG_IMAGE_QUEUE,
    clamdTimeoutMs: e.CHARTLOG_CLAMD_TIMEOUT_MS,
    uploadTimeoutSec: e.CHARTLOG_UPLOAD_TIMEOUT_S,
    bodyTimeoutSec: e.CHARTLOG_BODY_TIMEOUT_S,
    shutdownTimeoutSec: e.CHARTLOG_SHUTDOWN_TIMEOUT_S,
    clamdUrl: e.CHARTLOG_CLAMD_URL ?? null,
    encounterAccessDays: e.CHARTLOG_ENCOUNTER_ACCESS_DAYS,
    smtpUrl: e.CHARTLOG_SMTP_URL ?? null,
    smtpFrom: e.CHARTLOG_SMTP_FROM,
  };
};
