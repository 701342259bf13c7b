import type { EventMetadata } from "../../events/metadata.ts";
import type { NotificationChannel } from "../../events/notification.ts";
import { ConcurrencyError } from "../errors.ts";
import type { Logger } from "../logger.ts";
import type { Db } from "../store/db.ts";
import type { EventStore } from "../store/event_store.ts";
import { COLUMNS, decode, type EventRow } from "../store/read.ts";
import { sql } from "../store/sql.ts";
import { type Mailer, sendErrorClass } from "./mailer.ts";

/** The advisory lock a deliverer holds on one notification while it delivers it. */
const notificationLockName = (id: string) => `chartlog.notification:${id}`;

/** Who the delivery events say acted: the outbox itself, not a user. */
const OUTBOX_ACTOR: EventMetadata = { actorId: "system:outbox", actorRole: "system" };

/** Wait before the next attempt after `failed` failed ones: 15 s doubling, at most 10 min. */
export const defaultBackoffMs = (failed: number): number =>
  Math.min(10 * 60_000, 15_000 * 2 ** Math.max(0, failed - 1));

export interface OutboxOptions {
  /** The e-mail channel; null: none configured (e-mail notifications fail as `smtp_not_configured`). */
  mailer: Mailer | null;
  log: Logger;
  /** The clock that decides what is due and when to retry (tests move it). */
  now?: () => Date;
  backoffMs?: (failedAttempts: number) => number;
  /** Attempts before a notification is given up (`failed`). */
  maxAttempts?: number;
  /** Notifications handled per call. */
  batch?: number;
}

interface DueRow {
  id: string;
  user_id: string;
  channel: NotificationChannel;
  source_position: string | number;
  source_event_id: string;
  request_id: string;
  practitioner_id: string;
  clinic_id: string | null;
  expires_at: Date | string;
  attempts: number;
  version: number;
}

type Outcome =
  | { delivered: true }
  | { delivered: false; error: string; retry: boolean };

/**
 * Delivers due notifications (rows of the `notifications` projection) and
 * records each outcome as an event on the notification's stream:
 * `NotificationDelivered`, or `NotificationFailed` with the attempt, an
 * error class and, while attempts and the code's validity remain, `retryAt`.
 *
 * It runs in the notifications projection's worker (`whenCaughtUp`), so one
 * instance delivers at a time, and only rows whose stream is fully folded
 * are due: an outcome appended but not yet folded is never acted on again.
 * Should two deliverers ever overlap (a worker whose connection was cut
 * finishing a send while another took over, or a direct call beside the
 * worker), each notification is claimed first (an advisory lock, then its
 * stream is checked to be where the row says), and the outcome is appended
 * at the version the row was folded at: it is sent once and recorded once.
 *
 * In-app delivery has no side effect (the row is the inbox), so it is exactly
 * once. E-mail is at least once: a crash after the SMTP server accepted the
 * message and before the outcome is appended sends it again on restart;
 * nothing is ever lost, since a row stays due until an outcome is recorded.
 */
export class Outbox {
  readonly #store: EventStore;
  readonly #opts: Required<Omit<OutboxOptions, "mailer">> & { mailer: Mailer | null };
  /** Notifications a deliverer of this process is at. */
  readonly #inFlight = new Set<string>();

  constructor(store: EventStore, opts: OutboxOptions) {
    this.#store = store;
    this.#opts = {
      mailer: opts.mailer,
      log: opts.log,
      now: opts.now ?? (() => new Date()),
      backoffMs: opts.backoffMs ?? defaultBackoffMs,
      maxAttempts: opts.maxAttempts ?? 8,
      batch: opts.batch ?? 50,
    };
  }

  get mailer(): Mailer | null {
    return this.#opts.mailer;
  }

  /**
   * Delivers what is due now, through `db` for reads (the worker's own
   * connection), and returns the number of outcomes recorded.
   */
  async deliverDue(db?: Db, signal?: AbortSignal): Promise<number> {
    if (db) return await this.#deliverDue(db, signal);
    // the claims are session locks: they need one connection of their own
    const reserved = await this.#store.db.reserve();
    try {
      return await this.#deliverDue(reserved, signal);
    } finally {
      await reserved.release();
    }
  }

  async #deliverDue(db: Db, signal?: AbortSignal): Promise<number> {
    const now = this.#opts.now();
    const due = await db.query<DueRow>(sql`select n.id::text as id, n.user_id::text as user_id,
        n.channel, n.source_position, n.source_event_id::text as source_event_id,
        n.request_id::text as request_id, n.practitioner_id::text as practitioner_id,
        n.clinic_id::text as clinic_id, n.expires_at, n.attempts, n.version
      from notifications n
      where n.status = 'pending' and n.next_attempt_at <= ${now}::timestamptz
        and not exists (select 1 from events
          where stream_id = 'notification-' || n.id::text and stream_version > n.version)
      order by n.next_attempt_at, n.id limit ${this.#opts.batch}`);
    let recorded = 0;
    for (const n of due) {
      if (signal?.aborted) break;
      if (!(await this.#claim(db, n.id))) continue;
      try {
        // claimed: is it still where this read found it (no outcome appended meanwhile)?
        const [s] = await db.query<{ v: number | null }>(sql`select max(stream_version) as v
          from events where stream_id = ${`notification-${n.id}`}`);
        if (Number(s?.v ?? 0) !== n.version) continue;
        const outcome = n.channel === "in_app"
          ? { delivered: true as const }
          : await this.#email(db, n, now);
        if (await this.#record(n, outcome, now)) recorded++;
      } finally {
        await this.#release(db, n.id);
      }
    }
    return recorded;
  }

  /**
   * Claims one notification for this deliverer: a session advisory lock
   * (another instance's deliverer, or this one's after a lost connection,
   * skips it meanwhile), and an in-process mark, since on PGlite (one
   * session) advisory locks are re-entrant. No transaction stays open over
   * the SMTP conversation.
   */
  async #claim(db: Db, id: string): Promise<boolean> {
    if (this.#inFlight.has(id)) return false;
    this.#inFlight.add(id);
    try {
      const [r] = await db.query<{ ok: boolean }>(
        sql`select pg_try_advisory_lock(hashtext(${notificationLockName(id)})) as ok`,
      );
      if (r?.ok) return true;
    } catch (err) {
      this.#inFlight.delete(id);
      throw err;
    }
    this.#inFlight.delete(id);
    return false;
  }

  async #release(db: Db, id: string): Promise<void> {
    try {
      await db.query(sql`select pg_advisory_unlock(hashtext(${notificationLockName(id)}))`);
    } finally {
      this.#inFlight.delete(id);
    }
  }

  async #email(db: Db, n: DueRow, now: Date): Promise<Outcome> {
    const mailer = this.#opts.mailer;
    if (!mailer) return { delivered: false, error: "smtp_not_configured", retry: false };
    const expiresAt = new Date(n.expires_at);
    if (expiresAt <= now) return { delivered: false, error: "code_expired", retry: false };
    const rows = await db.query<EventRow>(
      sql`select ${COLUMNS} from events where global_position = ${n.source_position}`,
    );
    const [source] = await decode(this.#store, rows, true, db);
    const code = source?.data.code;
    if (typeof code !== "string") return { delivered: false, error: "code_erased", retry: false };
    const [who] = await db.query<{ email: string | null; practitioner: string | null }>(sql`select
        (select email from users where id = ${n.user_id}::uuid and active
          and erased_at is null) as email,
        (select name from users where id = ${n.practitioner_id}::uuid) as practitioner`);
    if (!who?.email) return { delivered: false, error: "no_address", retry: false };
    const [clinic] = n.clinic_id
      ? await db.query<{ name: string }>(
        sql`select name from clinics where id = ${n.clinic_id}::uuid`,
      )
      : [];
    try {
      await mailer.send({
        to: who.email,
        subject: "Your Chartlog access code",
        text: accessCodeMail({
          practitioner: who.practitioner,
          clinic: clinic?.name ?? null,
          code,
          expiresAt,
        }),
      });
      return { delivered: true };
    } catch (err) {
      return { delivered: false, error: sendErrorClass(err), retry: true };
    }
  }

  /** Appends the outcome at the folded version; false when another deliverer got there first. */
  async #record(n: DueRow, outcome: Outcome, now: Date): Promise<boolean> {
    const attempt = n.attempts + 1;
    const retryAt = outcome.delivered || !outcome.retry || attempt >= this.#opts.maxAttempts
      ? null
      : new Date(now.getTime() + this.#opts.backoffMs(attempt));
    const stillValid = retryAt !== null && retryAt < new Date(n.expires_at);
    const event = outcome.delivered
      ? { type: "NotificationDelivered", data: { notificationId: n.id, channel: n.channel } }
      : {
        type: "NotificationFailed",
        data: {
          notificationId: n.id,
          channel: n.channel,
          attempt,
          error: outcome.error,
          ...(stillValid ? { retryAt: retryAt!.toISOString() } : {}),
        },
      };
    try {
      await this.#store.append(`notification-${n.id}`, n.version, [event], {
        ...OUTBOX_ACTOR,
        causationId: n.source_event_id,
        correlationId: n.request_id,
      });
    } catch (err) {
      if (err instanceof ConcurrencyError) return false;
      throw err;
    }
    // ids, channel and error class only: never the address or the code
    const fields = { notificationId: n.id, channel: n.channel, attempt };
    if (outcome.delivered) this.#opts.log.info(fields, "notification delivered");
    else {
      this.#opts.log.warn(
        { ...fields, error: outcome.error, retry: stillValid },
        "notification delivery failed",
      );
    }
    return true;
  }
}

/**
 * The access-code e-mail: who asks, the code and until when. Nothing
 * clinical (never the purpose) and no name of the patient: an inbox is not
 * a safe place for either.
 */
export const accessCodeMail = (m: {
  practitioner: string | null;
  clinic: string | null;
  code: string;
  expiresAt: Date;
}): string => {
  const who = m.practitioner ?? "A practitioner";
  const at = m.clinic ? ` of ${m.clinic}` : "";
  const until = m.expiresAt.toISOString().replace("T", " ").replace(/:\d\d\.\d+Z$/, " UTC");
  return [
    "Hello,",
    "",
    `${who}${at} asks for access to your health record in Chartlog.`,
    "If you agree, give them this one-time code:",
    "",
    `    ${m.code}`,
    "",
    `It can be used once, until ${until}.`,
    "If you did not expect this request, do not share the code.",
    "",
  ].join("\n");
};
