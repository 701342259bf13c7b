import { actorUserId } from "./actor.ts";
import { erasedId } from "../src/store/shred.ts";
import { sql } from "../src/store/sql.ts";
import type { Projection } from "../src/store/types.ts";

/**
 * Family proxies, inline: the policy's `proxy` and `full_proxy` relations
 * read it on every request, and a removal must take effect at once. Erasing
 * the patient ends their proxies (the log keeps who they were).
 */
export const proxies: Projection = {
  name: "patient_proxies",
  version: 1,
  mode: "inline",
  tables: ["patient_proxies"],
  setup: `create table patient_proxies (
    patient_id  uuid not null,
    user_id     uuid not null,
    proxy_id    uuid not null unique,
    level       text not null,
    added_at    timestamptz not null,
    added_by    uuid,
    primary key (patient_id, user_id)
  );
  create index patient_proxies_user on patient_proxies (user_id);`,
  handlers: {
    ProxyAdded: async (db, e) => {
      const d = e.data;
      await db.query(
        sql`insert into patient_proxies (patient_id, user_id, proxy_id, level, added_at,
          added_by)
        values (${d.patientId}::uuid, ${d.userId}::uuid, ${d.proxyId}::uuid, ${d.level},
          ${e.recordedAt}::timestamptz, ${actorUserId(e.metadata)}::uuid)`,
      );
    },
    ProxyRemoved: async (db, e) => {
      await db.query(sql`delete from patient_proxies where proxy_id = ${e.data.proxyId}::uuid`);
    },
    SubjectKeyDestroyed: async (db, e) => {
      const patient = erasedId(e.data.subjectId, "patient");
      if (patient) {
        await db.query(sql`delete from patient_proxies where patient_id = ${patient}::uuid`);
      }
      const user = erasedId(e.data.subjectId, "user");
      if (user) await db.query(sql`delete from patient_proxies where user_id = ${user}::uuid`);
    },
  },
};
