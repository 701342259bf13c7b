import { erasedId } from "../src/store/shred.ts";
import { sql } from "../src/store/sql.ts";
import type { Projection } from "../src/store/types.ts";

const enc = new TextEncoder();

/**
 * The id of the notification of `sourceEventId` to `userId` on `channel`: a
 * digest (formatted as a version 8 UUID), so that a rebuild makes the same
 * ids and finds the delivery events recorded under them.
 */
export const notificationId = async (
  sourceEventId: string,
  channel: string,
  userId: string,
): Promise<string> => {
  const d = new Uint8Array(
    await crypto.subtle.digest("SHA-256", enc.encode(`${sourceEventId}:${channel}:${userId}`)),
  ).slice(0, 16);
  d[6] = (d[6]! & 0x0f) | 0x80;
  d[8] = (d[8]! & 0x3f) | 0x80;
  const h = [...d].map((b) => b.toString(16).padStart(2, "0")).join("");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
};

/**
 * The outbox: one row per notification (a recipient on a channel) and where
 * its delivery stands. Async: it follows the log, and its worker delivers
 * what is due (src/outbox/delivery.ts) while it holds the projection's lock.
 *
 * An `AccessRequested` notifies, in-app, every active patient account of
 * that patient and every full proxy of theirs, and by e-mail every such
 * patient account with an address (never a proxy's: the code is the
 * patient's to give). The rows hold ids and times only: the code stays
 * sealed in the source event (`source_position`), and the address in
 * `users`, both read when the notification is shown or sent. Delivery
 * events (`NotificationDelivered`, `NotificationFailed`) move `status`;
 * `version` is how much of the notification's stream is folded, so that the
 * worker never acts on a row whose newest outcome it has not folded yet.
 *
 * Recipients are read from `users` and `patient_proxies` when the event is
 * folded (a rebuild reads them as they are then; a code is valid for
 * minutes, and an expired one is neither shown nor e-mailed). The inbox
 * shows a proxy's notifications only while they are still a full proxy.
 *
 * Erasure of the patient (or of the recipient's account) deletes their
 * rows: nothing of theirs, not even that a code was sent, is kept here (the
 * log keeps the facts, the key that sealed the code is gone).
 */
export const notifications: Projection = {
  name: "notifications",
  version: 1,
  mode: "async",
  tables: ["notifications"],
  setup: `create table notifications (
    id                uuid primary key,
    user_id           uuid not null,
    patient_id        uuid not null,
    channel           text not null,
    kind              text not null,
    source_position   bigint not null,
    source_event_id   uuid not null,
    request_id        uuid not null,
    practitioner_id   uuid not null,
    clinic_id         uuid,
    expires_at        timestamptz not null,
    created_at        timestamptz not null,
    status            text not null default 'pending',
    attempts          integer not null default 0,
    last_error        text,
    next_attempt_at   timestamptz,
    delivered_at      timestamptz,
    version           integer not null default 0
  );
  create index notifications_inbox on notifications (user_id, channel, created_at desc, id desc);
  create index notifications_recent on notifications (created_at desc, id desc);
  create index notifications_due on notifications (next_attempt_at) where status = 'pending';
  create index notifications_patient on notifications (patient_id);`,
  handlers: {
    AccessRequested: async (db, e) => {
      const d = e.data as { requestId: string; patientId: string; practitionerId: string };
      const data = e.data as { clinicId: string | null; expiresAt: string };
      const recipients = await db.query<{ id: string; email: string | null; own: boolean }>(
        sql`select u.id::text as id, u.email, true as own from users u
          where u.role = 'patient' and u.patient_id = ${d.patientId}::uuid
            and u.active and u.erased_at is null
          union
          select u.id::text, null, false from patient_proxies p join users u on u.id = p.user_id
          where p.patient_id = ${d.patientId}::uuid and p.level = 'full'
            and u.active and u.erased_at is null
          order by 1, 3 desc`,
      );
      const seen = new Set<string>();
      for (const r of recipients) {
        const channels = [
          ...(seen.has(r.id) ? [] : ["in_app"]),
          ...(r.own && r.email ? ["email"] : []),
        ];
        seen.add(r.id);
        for (const channel of channels) {
          const id = await notificationId(e.eventId, channel, r.id);
          await db.query(sql`insert into notifications (id, user_id, patient_id, channel, kind,
              source_position, source_event_id, request_id, practitioner_id, clinic_id,
              expires_at, created_at, next_attempt_at)
            values (${id}::uuid, ${r.id}::uuid, ${d.patientId}::uuid, ${channel},
              'access_code', ${e.globalPosition}, ${e.eventId}::uuid, ${d.requestId}::uuid,
              ${d.practitionerId}::uuid, ${data.clinicId}::uuid,
              ${data.expiresAt}::timestamptz, ${e.recordedAt}::timestamptz,
              ${e.recordedAt}::timestamptz)
            on conflict (id) do nothing`);
        }
      }
    },
    NotificationDelivered: async (db, e) => {
      await db.query(sql`update notifications set status = 'delivered', next_attempt_at = null,
          delivered_at = ${e.recordedAt}::timestamptz, last_error = null,
          version = ${e.streamVersion}
        where id = ${e.data.notificationId}::uuid`);
    },
    NotificationFailed: async (db, e) => {
      const retryAt = (e.data.retryAt as string | undefined) ?? null;
      await db.query(sql`update notifications set
          status = ${retryAt ? "pending" : "failed"}, attempts = ${e.data.attempt},
          last_error = ${e.data.error}, next_attempt_at = ${retryAt}::timestamptz,
          version = ${e.streamVersion}
        where id = ${e.data.notificationId}::uuid`);
    },
    SubjectKeyDestroyed: async (db, e) => {
      const patient = erasedId(e.data.subjectId, "patient");
      if (patient) {
        await db.query(sql`delete from notifications where patient_id = ${patient}::uuid`);
      }
      const user = erasedId(e.data.subjectId, "user");
      if (user) await db.query(sql`delete from notifications where user_id = ${user}::uuid`);
    },
  },
};
