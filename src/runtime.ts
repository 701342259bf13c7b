import { catalog as appCatalog } from "../events/index.ts";
import { projections as appProjections } from "../projections/index.ts";
import { Sessions } from "./auth/sessions.ts";
import { GrantSweeper } from "./clinical/grant_sweeper.ts";
import { CheckpointSigner, generateCheckpointKey, keyNameOf } from "./audit/checkpoint.ts";
import { CheckpointPublisher, type TlogContext } from "./audit/publisher.ts";
import { readInstallation } from "./store/installation.ts";
import { type ScryptParams, scryptParamsFor } from "./auth/password.ts";
import {
  deriveAccessCodeKey,
  deriveIndexKey,
  deriveJwtKey,
  deriveRecoveryCodeKey,
} from "./auth/tokens.ts";
import type { Config } from "./config.ts";
import type { Logger } from "./logger.ts";
import type { Catalog } from "./store/catalog.ts";
import type { Db } from "./store/db.ts";
import { claimBlobDir } from "./media/blob_claim.ts";
import { BlobStore } from "./media/blob_store.ts";
import { ImagePool } from "./media/image_pool.ts";
import { type Scanner, scannerFromUrl } from "./media/scanner.ts";
import { EventStore } from "./store/event_store.ts";
import { type AppliedMigration, migrate } from "./store/migrations.ts";
import { openPglite } from "./store/pglite_driver.ts";
import { openPostgres } from "./store/postgres_driver.ts";
import { PhiCodec } from "./store/phi_codec.ts";
import { ProjectionWorker, setupProjections } from "./store/projection_engine.ts";
import { subjectKeyShredder } from "./store/shred.ts";
import { Outbox, type OutboxOptions } from "./outbox/delivery.ts";
import { type Mailer, smtpMailer } from "./outbox/mailer.ts";
import { notifications } from "../projections/notifications.ts";
import type { Projection } from "./store/types.ts";
import { RuntimeMetrics } from "./metrics.ts";

/** Opens the configured database: postgres.js pool or embedded PGlite. */
export const openDatabase = async (config: Config): Promise<Db> => {
  if (config.database.kind === "postgres") {
    return openPostgres(config.database.url, {
      max: config.dbPoolMax,
      idleInTransactionTimeoutMs: config.idleInTransactionTimeoutMs,
    });
  }
  if (config.database.dataDir !== "memory://") {
    await Deno.mkdir(config.database.dataDir, { recursive: true });
  }
  return await openPglite(config.database.dataDir);
};

/**
 * Applies migrations over `CHARTLOG_OWNER_DATABASE_URL` when set (a
 * connection of its own, closed afterwards), else over the runtime's
 * database, which then runs as the owner of the log (the server warns of
 * that on PostgreSQL; see src/store/roles.ts).
 */
const migrateAsOwner = async (
  config: Config,
  db: Db,
  log: Logger,
): Promise<AppliedMigration[]> => {
  const opts = {
    appPassword: config.appDbPassword,
    analystPassword: config.analystDbPassword,
    log,
  };
  if (!config.ownerDatabaseUrl) return await migrate(db, opts);
  const owner = openPostgres(config.ownerDatabaseUrl, { max: 1 });
  try {
    return await migrate(owner, opts);
  } finally {
    await owner.close();
  }
};

/**
 * The master key: from the environment, or in development one generated
 * once into the data directory (with a warning: losing that file loses
 * every sealed PHI field).
 */
export const resolveMasterKey = async (
  config: Config,
  log: Logger,
): Promise<Uint8Array<ArrayBuffer>> => {
  if (config.masterKey) return config.masterKey;
  if (config.env === "production") throw new Error("CHARTLOG_MASTER_KEY is required");
  const path = `${config.dataDir}/master.key`;
  try {
    const text = (await Deno.readTextFile(path)).trim();
    return Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) throw err;
  }
  await Deno.mkdir(config.dataDir, { recursive: true });
  const key = crypto.getRandomValues(new Uint8Array(32));
  await Deno.writeTextFile(path, btoa(String.fromCharCode(...key)) + "\n", {
    mode: 0o600,
    createNew: true,
  });
  log.warn(
    { path },
    "generated a development master key; set CHARTLOG_MASTER_KEY in production",
  );
  return key;
};

/**
 * The checkpoint signing key: from the environment, or outside production
 * one generated once into the data directory (with a warning).
 */
export const resolveCheckpointKey = async (config: Config, log: Logger): Promise<Uint8Array> => {
  if (config.checkpointKey) return config.checkpointKey;
  if (config.env === "production") throw new Error("CHARTLOG_CHECKPOINT_KEY is required");
  const path = `${config.dataDir}/checkpoint.key`;
  try {
    const text = (await Deno.readTextFile(path)).trim();
    return Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) throw err;
  }
  await Deno.mkdir(config.dataDir, { recursive: true });
  const key = generateCheckpointKey();
  try {
    await Deno.writeTextFile(path, btoa(String.fromCharCode(...key)) + "\n", {
      mode: 0o600,
      createNew: true,
    });
  } catch (err) {
    // another process made it first: use theirs
    if (err instanceof Deno.errors.AlreadyExists) return await resolveCheckpointKey(config, log);
    throw err;
  }
  log.warn(
    { path },
    "generated a development checkpoint key; set CHARTLOG_CHECKPOINT_KEY in production",
  );
  return key;
};

/** The outbox's mailer (default: from configuration), backoff, attempts and worker timing. */
export type OutboxRuntimeOptions = Partial<Pick<OutboxOptions, "backoffMs" | "maxAttempts">> & {
  mailer?: Mailer | null;
  /** How often its worker looks for new events and due deliveries (default 200 ms). */
  pollMs?: number;
  /** Its worker's first wait after losing the database (default 500 ms). */
  retryMs?: number;
};

export interface Runtime {
  db: Db;
  /** Migrations applied while opening (empty when the schema was up to date). */
  migrated: readonly AppliedMigration[];
  store: EventStore;
  sessions: Sessions;
  /** Keys digests used as index stream ids (e.g. MRN reservations). */
  indexKey: Uint8Array;
  /** Keys the digests of one-time access codes (src/auth/access_codes.ts). */
  accessCodeKey: Uint8Array;
  /** scrypt parameters for new password hashes: cheap only under CHARTLOG_ENV=test. */
  passwordParams: Readonly<ScryptParams>;
  /** Every PHI read appends an access event. Off only in benchmarks, never by configuration. */
  auditReads: boolean;
  projections: readonly Projection[];
  /** Prometheus metrics of the log and the upload pipeline (src/metrics.ts). */
  metrics: RuntimeMetrics;
  /** Encrypted media files. */
  blobs: BlobStore;
  /** Workers that decode and re-encode uploaded images. */
  images: ImagePool;
  /** The malware scanner uploads go through; null when none is configured. */
  scanner: Scanner | null;
  workers: ProjectionWorker[];
  /** Delivers notifications; its worker is the notifications projection's. */
  outbox: Outbox;
  /** Records the end of expired grants (null when workers are off, as in tests). */
  sweeper: GrantSweeper | null;
  /**
   * What publishing checkpoints needs (the key is resolved on first use:
   * commands that never sign need none).
   */
  tlog(): Promise<TlogContext>;
  /** Publishes checkpoints in the background (null when workers are off). */
  publisher: CheckpointPublisher | null;
  close(): Promise<void>;
}

/**
 * Opens the database, applies migrations and projection DDL, builds the
 * store, and (unless `workers: false`) starts async projection workers.
 */
export const openRuntime = async (
  config: Config,
  log: Logger,
  opts: {
    workers?: boolean;
    catalog?: Catalog;
    projections?: readonly Projection[];
    /** The clock for events, sessions and tokens (tests move it). */
    now?: () => Date;
    /** Benchmarks only: skip access events to measure what they cost. */
    auditReads?: boolean;
    /**
     * Check (and on first use mark) that the blob directory is this
     * database's; default true. Commands that never touch blobs skip it.
     */
    claimBlobs?: boolean;
    /**
     * Tests only: an open database to use instead of the configured one (an
     * in-memory PGlite copied from a migrated image); closed with the runtime.
     */
    database?: Db;
    /**
     * Tests: the outbox's mailer (default: SMTP from `CHARTLOG_SMTP_URL`,
     * none without it), backoff and attempts, and how often its worker polls.
     */
    outbox?: OutboxRuntimeOptions;
  } = {},
): Promise<Runtime> => {
  const masterKey = await resolveMasterKey(config, log).catch(async (err) => {
    await opts.database?.close(); // it is ours to close, on failure too
    throw err;
  });
  const db = opts.database ?? await openDatabase(config);
  try {
    const applied = await migrateAsOwner(config, db, log);
    if (applied.length > 0) {
      log.info({ applied: applied.map((m) => m.version) }, "migrations applied");
    }
    const projections = opts.projections ?? appProjections;
    const codec = new PhiCodec(db, masterKey);
    const store = new EventStore({
      db,
      catalog: opts.catalog ?? appCatalog,
      codec,
      shredder: subjectKeyShredder(codec),
      projections,
      now: opts.now,
    });
    await setupProjections(store, projections);
    const indexKey = await deriveIndexKey(masterKey);
    const blobs = new BlobStore(config.blobDir, codec, indexKey);
    // before any worker starts: a refused directory stops start-up cleanly
    if (opts.claimBlobs !== false) await claimBlobDir(db, blobs);
    const mailer = opts.outbox?.mailer !== undefined
      ? opts.outbox.mailer
      : config.smtpUrl
      ? smtpMailer(config.smtpUrl, config.smtpFrom)
      : null;
    const outbox = new Outbox(store, {
      mailer,
      log,
      now: opts.now,
      backoffMs: opts.outbox?.backoffMs,
      maxAttempts: opts.outbox?.maxAttempts,
    });
    let tlogContext: Promise<TlogContext> | null = null;
    const tlog = () =>
      tlogContext ??= (async () => {
        const installationId = (await readInstallation(db)).id;
        const key = await resolveCheckpointKey(config, log);
        return {
          store,
          installationId,
          signer: new CheckpointSigner(key, keyNameOf(installationId)),
        };
      })().catch((err) => {
        tlogContext = null;
        throw err;
      });
    // before any worker starts: a key that cannot be had stops start-up cleanly
    const publishing = opts.workers === false ? null : await tlog();
    const workers = opts.workers === false ? [] : projections
      .filter((p) => p.mode === "async")
      .map((p) =>
        new ProjectionWorker(
          store,
          p,
          log,
          p.name === notifications.name
            ? {
              pollMs: opts.outbox?.pollMs,
              retryMs: opts.outbox?.retryMs,
              whenCaughtUp: (db, signal) => outbox.deliverDue(db, signal).then(() => {}),
            }
            : {},
        ).start()
      );
    const sweeper = opts.workers === false
      ? null
      : new GrantSweeper(store, log, { now: opts.now }).start();
    const publisher = publishing === null ? null : new CheckpointPublisher(publishing, log, {
      events: config.checkpointEvents,
      seconds: config.checkpointSeconds,
      now: opts.now,
    }).start();
    const passwordParams = scryptParamsFor(config.env);
    const sessions = new Sessions(store, {
      jwtKey: await deriveJwtKey(masterKey),
      mfaRequiredRoles: config.mfaRequiredRoles,
      accessTokenTtlSec: config.accessTokenTtlSec,
      sessionIdleTimeoutSec: config.sessionIdleTimeoutSec,
      recoveryCodeKey: await deriveRecoveryCodeKey(masterKey),
      passwordParams,
      now: opts.now,
    });
    const images = new ImagePool(config.imageWorkers, { maxQueue: config.imageQueue });
    return {
      db,
      migrated: applied,
      store,
      sessions,
      passwordParams,
      indexKey,
      accessCodeKey: await deriveAccessCodeKey(masterKey),
      blobs,
      images,
      scanner: scannerFromUrl(config.clamdUrl ?? undefined, { timeoutMs: config.clamdTimeoutMs }),
      auditReads: opts.auditReads ?? true,
      projections,
      metrics: new RuntimeMetrics(store, projections),
      workers,
      outbox,
      sweeper,
      tlog,
      publisher,
      close: async () => {
        images.close();
        await Promise.all([...workers.map((w) => w.stop()), sweeper?.stop(), publisher?.stop()]);
        mailer?.close();
        await db.close();
      },
    };
  } catch (err) {
    await db.close();
    throw err;
  }
};
