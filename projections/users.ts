import { RECOVERY_DIGEST_PREFIX } from "../src/auth/mfa.ts";
import { COUNTED_FAILURES } from "../src/domain/credentials.ts";
import { erasedId } from "../src/store/shred.ts";
import { sql } from "../src/store/sql.ts";
import type { Projection } from "../src/store/types.ts";

/** Recovery-code digests made with the keyed HMAC (src/auth/mfa.ts), not legacy SHA-256. */
const isKeyedDigest = (d: unknown): boolean =>
  typeof d === "string" && d.startsWith(RECOVERY_DIGEST_PREFIX);

/** A second-factor code that was already used. */
export class ReplayedCodeError extends Error {
  override name = "ReplayedCodeError";
}

/**
 * Users and their credentials, inline so that login and the admin API read
 * their own writes. `email` is unique (stored lower-case): a second
 * registration with the same address is refused in the append's transaction.
 * Lock-out columns (consecutive failures, locked until) mirror auth events for
 * display only.
 *
 * Erasure (`SubjectKeyDestroyed` of `user-<id>`) keeps the row as an
 * inactive tombstone (id, role, patient link: ids resolve, and an erased
 * patient's record cannot be claimed by a new account) with email, name,
 * phone and specialization null and `erased_at` set, and drops the password
 * hash and the second factor. A null email frees the address for a new
 * account; the unique index allows many nulls. Replays read the sealed
 * fields as null, so these columns are nullable and null ones are skipped.
 */
export const users: Projection = {
  name: "users",
  version: 5, // 5: erasure
  mode: "inline",
  tables: ["users", "user_credentials", "user_mfa"],
  setup: `create table users (
    id              uuid primary key,
    email           text unique,
    name            text,
    role            text not null,
    active          boolean not null,
    pending         boolean not null default false,
    patient_id      uuid unique,
    phone           text,
    specialization  text,
    failed_logins   integer not null default 0,
    mfa_enabled     boolean not null default false,
    locked_until    timestamptz,
    version         integer not null,
    created_at      timestamptz not null,
    updated_at      timestamptz not null,
    erased_at       timestamptz
  );
  create table user_mfa (
    user_id          uuid primary key,
    sealed_secret    jsonb not null,
    enabled          boolean not null,
    recovery_digests jsonb not null default '[]',
    last_step        bigint
  );
  create table user_credentials (
    user_id        uuid primary key,
    password_hash  text not null,
    updated_at     timestamptz not null
  );`,
  handlers: {
    UserRegistered: async (db, e) => {
      const d = e.data;
      const at = e.recordedAt;
      await db.query(sql`insert into users (id, email, name, role, active, pending, patient_id,
          version, created_at, updated_at)
        values (${d.userId}::uuid, ${d.email == null ? null : String(d.email).toLowerCase()},
          ${d.name}, ${d.role},
          ${!d.pending}, ${!!d.pending},
          ${d.patientId}::uuid, ${e.streamVersion}, ${at}::timestamptz,
          ${at}::timestamptz)`);
      if (d.passwordHash == null) return; // erased: no credentials to keep
      await db.query(sql`insert into user_credentials (user_id, password_hash, updated_at)
        values (${d.userId}::uuid, ${d.passwordHash}, ${at}::timestamptz)`);
    },
    UserRoleChanged: async (db, e) => {
      await db.query(
        sql`update users set role = ${e.data.role}, patient_id = ${e.data.patientId}::uuid,
        version = ${e.streamVersion}, updated_at = ${e.recordedAt}::timestamptz
        where id = ${e.data.userId}::uuid`,
      );
    },
    UserApproved: async (db, e) => {
      await db.query(
        sql`update users set active = erased_at is null, pending = false, version = ${e.streamVersion},
        updated_at = ${e.recordedAt}::timestamptz
        where id = ${e.data.userId}::uuid`,
      );
    },
    UserDeactivated: async (db, e) => {
      await db.query(sql`update users set active = false, pending = false,
        version = ${e.streamVersion},
        updated_at = ${e.recordedAt}::timestamptz
        where id = ${e.data.userId}::uuid`);
    },
    UserReactivated: async (db, e) => {
      await db.query(sql`update users set active = erased_at is null, failed_logins = 0,
        locked_until = null, version = ${e.streamVersion},
        updated_at = ${e.recordedAt}::timestamptz
        where id = ${e.data.userId}::uuid`);
    },
    UserPasswordChanged: async (db, e) => {
      const at = e.recordedAt;
      await db.query(sql`update user_credentials set password_hash = ${e.data.passwordHash},
        updated_at = ${at}::timestamptz where user_id = ${e.data.userId}::uuid`);
      await db.query(sql`update users set version = ${e.streamVersion},
        updated_at = ${at}::timestamptz where id = ${e.data.userId}::uuid`);
    },
    UserProfileUpdated: async (db, e) => {
      const d = e.data;
      await db.query(sql`update users set
          name = case when ${"name" in d} then ${d.name ?? null} else name end,
          phone = case when ${"phone" in d} then ${d.phone ?? null} else phone end,
          specialization = case when ${"specialization" in d}
            then ${d.specialization ?? null} else specialization end,
          version = ${e.streamVersion},
          updated_at = ${e.recordedAt}::timestamptz
        where id = ${d.userId}::uuid`);
    },
    UserPasswordReset: async (db, e) => {
      const at = e.recordedAt;
      await db.query(sql`update user_credentials set password_hash = ${e.data.passwordHash},
        updated_at = ${at}::timestamptz where user_id = ${e.data.userId}::uuid`);
      await db.query(sql`update users set version = ${e.streamVersion},
        updated_at = ${at}::timestamptz where id = ${e.data.userId}::uuid`);
    },
    // failed_logins and locked_until are for display: logins decide from the
    // auth stream itself (src/domain/credentials.ts), never from these columns
    LoginFailed: async (db, e) => {
      if (!COUNTED_FAILURES.includes(e.data.reason as string)) return;
      await db.query(sql`update users set failed_logins = failed_logins + 1
        where id = ${e.data.userId}::uuid`);
    },
    AccountLocked: async (db, e) => {
      await db.query(sql`update users set failed_logins = 0,
        locked_until = ${e.data.until}::text::timestamptz where id = ${e.data.userId}::uuid`);
    },
    LoginSucceeded: async (db, e) => {
      await db.query(sql`update users set failed_logins = 0, locked_until = null
        where id = ${e.data.userId}::uuid`);
    },
    AccountUnlocked: async (db, e) => {
      await db.query(sql`update users set failed_logins = 0, locked_until = null
        where id = ${e.data.userId}::uuid`);
    },
    MfaEnrollmentStarted: async (db, e) => {
      // handlers see the opened payload; the secret is kept as the log seals it
      await db.query(sql`insert into user_mfa (user_id, sealed_secret, enabled)
        select ${e.data.userId}::uuid, data->'secret', false from events
        where event_id = ${e.eventId}::uuid
        on conflict (user_id) do update set sealed_secret = excluded.sealed_secret,
          enabled = false, recovery_digests = '[]', last_step = null`);
    },
    MfaEnabled: async (db, e) => {
      // unkeyed SHA-256 digests of earlier versions are cheap to reverse: not kept
      const keyed = ((e.data.recoveryCodeDigests ?? []) as string[]).filter(isKeyedDigest);
      await db.query(sql`update user_mfa set enabled = true,
        recovery_digests = ${keyed}::jsonb
        where user_id = ${e.data.userId}::uuid`);
      await db.query(sql`update users set mfa_enabled = true where id = ${e.data.userId}::uuid`);
    },
    MfaDisabled: async (db, e) => {
      await db.query(sql`delete from user_mfa where user_id = ${e.data.userId}::uuid`);
      await db.query(sql`update users set mfa_enabled = false where id = ${e.data.userId}::uuid`);
    },
    MfaReset: async (db, e) => {
      await db.query(sql`delete from user_mfa where user_id = ${e.data.userId}::uuid`);
      await db.query(sql`update users set mfa_enabled = false where id = ${e.data.userId}::uuid`);
    },
    MfaVerified: async (db, e) => {
      // refusing here refuses the append: a code is accepted once, atomically
      const d = e.data;
      // a legacy recovery code was never kept (see MfaEnabled): nothing to use up
      if (d.method !== "totp" && !isKeyedDigest(d.recoveryCodeDigest)) return;
      const rows = d.method === "totp"
        ? await db.query(sql`update user_mfa set last_step = ${d.step}
            where user_id = ${d.userId}::uuid and coalesce(last_step, -1) < ${d.step}
            returning user_id`)
        : await db.query(sql`update user_mfa
            set recovery_digests = recovery_digests - ${d.recoveryCodeDigest}::text
            where user_id = ${d.userId}::uuid and recovery_digests ? ${d.recoveryCodeDigest}::text
            returning user_id`);
      if (rows.length === 0) throw new ReplayedCodeError();
    },
    SubjectKeyDestroyed: async (db, e) => {
      const id = erasedId(e.data.subjectId, "user");
      if (!id) return;
      await db.query(sql`update users set email = null, name = null, phone = null,
          specialization = null, active = false, pending = false, mfa_enabled = false,
          erased_at = coalesce(erased_at, ${e.recordedAt}::timestamptz)
        where id = ${id}::uuid`);
      await db.query(sql`delete from user_credentials where user_id = ${id}::uuid`);
      await db.query(sql`delete from user_mfa where user_id = ${id}::uuid`);
    },
    UserLoggedIn: async (db, e) => {
      await db.query(sql`update users set failed_logins = 0, locked_until = null
        where id = ${e.data.userId}::uuid`);
    },
  },
};
