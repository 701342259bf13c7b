import { erasedId } from "../src/store/shred.ts";
import { sql } from "../src/store/sql.ts";
import type { Db } from "../src/store/db.ts";
import type { Projection } from "../src/store/types.ts";

/** A refresh-token digest; an erased one (null on replay) is not kept. */
const insertDigest = async (db: Db, digest: unknown, sessionId: unknown) => {
  if (digest == null) return;
  await db.query(sql`insert into session_refresh_tokens (digest, session_id, rotated)
    values (${digest}, ${sessionId}::uuid, false)`);
};

/**
 * Login sessions, how each was authenticated (`amr`), and their
 * refresh-token digests, inline: every request
 * checks its session here, and a logout must take effect at once. A digest
 * stays after rotation (marked rotated) so that presenting an old token is
 * recognised as reuse. Erasing the user (`SubjectKeyDestroyed` of
 * `user-<id>`) ends their sessions and drops their digests, which a replay
 * reads as null (they are sealed with the user's key) and so never stores.
 */
export const sessions: Projection = {
  name: "sessions",
  version: 3, // 3: erasure
  mode: "inline",
  tables: ["sessions", "session_refresh_tokens"],
  setup: `create table sessions (
    id                uuid primary key,
    user_id           uuid not null,
    started_at        timestamptz not null,
    last_activity_at  timestamptz not null,
    ended_at          timestamptz,
    end_reason        text,
    version           integer not null,
    amr               jsonb not null default '["pwd"]'
  );
  create index sessions_user on sessions (user_id) where ended_at is null;
  create table session_refresh_tokens (
    digest      text primary key,
    session_id  uuid not null,
    rotated     boolean not null
  );`,
  handlers: {
    UserLoggedIn: async (db, e) => {
      const at = e.recordedAt;
      await db.query(sql`insert into sessions (id, user_id, started_at, last_activity_at, version,
          amr)
        values (${e.data.sessionId}::uuid, ${e.data.userId}::uuid, ${at}::timestamptz,
          ${at}::timestamptz, ${e.streamVersion}, ${e.data.amr}::jsonb)`);
      await insertDigest(db, e.data.refreshTokenDigest, e.data.sessionId);
    },
    SessionRefreshed: async (db, e) => {
      await db.query(sql`update session_refresh_tokens set rotated = true
        where session_id = ${e.data.sessionId}::uuid`);
      await insertDigest(db, e.data.refreshTokenDigest, e.data.sessionId);
      await db.query(sql`update sessions set version = ${e.streamVersion},
        last_activity_at = ${e.recordedAt}::timestamptz
        where id = ${e.data.sessionId}::uuid`);
    },
    SessionSecondFactorVerified: async (db, e) => {
      await db.query(sql`update sessions set version = ${e.streamVersion},
        amr = case when amr ? 'otp' then amr else amr || '["otp"]'::jsonb end
        where id = ${e.data.sessionId}::uuid`);
    },
    SubjectKeyDestroyed: async (db, e) => {
      const id = erasedId(e.data.subjectId, "user");
      if (!id) return;
      await db.query(sql`delete from session_refresh_tokens where session_id in
        (select id from sessions where user_id = ${id}::uuid)`);
      await db.query(sql`update sessions set
          ended_at = ${e.recordedAt}::timestamptz, end_reason = 'erased'
        where user_id = ${id}::uuid and ended_at is null`);
    },
    SessionEnded: async (db, e) => {
      await db.query(
        sql`update sessions set ended_at = ${e.recordedAt}::timestamptz,
        end_reason = ${e.data.reason}, version = ${e.streamVersion}
        where id = ${e.data.sessionId}::uuid and ended_at is null`,
      );
    },
  },
};
