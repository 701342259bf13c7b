import type { EventMetadata } from "../../events/metadata.ts";
import type { ProxyLevel } from "../../events/proxy.ts";
import { handleCommand } from "../domain/command_handler.ts";
import { proxyDecider } from "../domain/proxy.ts";
import { NotFoundError, ValidationError } from "../errors.ts";
import type { EventStore } from "../store/event_store.ts";
import { sql } from "../store/sql.ts";
import { patientStream } from "./patients.ts";

export const proxiesStream = (patientId: string) => `proxies-${patientId}`;

/**
 * One proxy as the API shows it. The name is the family member's account
 * name (an account, not the patient's record, as staff names are).
 */
export interface ProxyView {
  userId: string;
  name: string | null;
  level: ProxyLevel;
  /** The relation's id: events written through it carry it as their `grantId`. */
  proxyId: string;
  addedAt: string;
  addedBy: string | null;
}

const requirePatient = async (store: EventStore, patientId: string) => {
  if ((await store.streamVersion(patientStream(patientId))) === 0) {
    throw new NotFoundError("no such patient");
  }
};

/**
 * Who may be made a proxy: an active user of role `patient` (a family
 * member, or a patient of their own record) other than the patient's own
 * account. An unknown or erased account is a 404; any other refusal a 422
 * naming `userId`.
 */
const requireProxyCandidate = async (store: EventStore, patientId: string, userId: string) => {
  const [u] = await store.db.query<{ role: string; active: boolean; patient_id: string | null }>(
    sql`select role, active, patient_id::text as patient_id from users
      where id = ${userId}::uuid and erased_at is null`,
  );
  if (!u) throw new NotFoundError("no such user");
  const refuse = (message: string): never => {
    throw new ValidationError("that user cannot be a proxy", [{ path: "userId", message }]);
  };
  if (u.role !== "patient") refuse("must be a user with role patient");
  if (!u.active) refuse("must be an active user");
  if (u.patient_id === patientId) refuse("is the patient's own account");
};

/** The proxies of a patient, from the inline read model, in the order they were added. */
export const listProxies = async (store: EventStore, patientId: string): Promise<ProxyView[]> => {
  const rows = await store.db.query<{
    user_id: string;
    name: string | null;
    level: ProxyLevel;
    proxy_id: string;
    added_at: Date | string;
    added_by: string | null;
  }>(sql`select p.user_id::text as user_id, u.name, p.level, p.proxy_id::text as proxy_id,
      p.added_at, p.added_by::text as added_by
    from patient_proxies p left join users u on u.id = p.user_id
    where p.patient_id = ${patientId}::uuid
    order by p.added_at, p.user_id`);
  return rows.map((r) => ({
    userId: r.user_id,
    name: r.name,
    level: r.level,
    proxyId: r.proxy_id,
    addedAt: new Date(r.added_at).toISOString(),
    addedBy: r.added_by,
  }));
};

/** One patient a user acts for, as `GET /v1/me/proxies` shows it: ids and level, no PHI. */
export interface ProxyOfView {
  patientId: string;
  level: ProxyLevel;
  proxyId: string;
  addedAt: string;
}

/**
 * The patients a user is a proxy of, in the order they were added: how a
 * family member's app finds the records it may open (a patient user may not
 * search patients). Soft-deleted patients are left out, as their reads are 404.
 */
export const proxiesOf = async (store: EventStore, userId: string): Promise<ProxyOfView[]> => {
  const rows = await store.db.query<{
    patient_id: string;
    level: ProxyLevel;
    proxy_id: string;
    added_at: Date | string;
  }>(sql`select p.patient_id::text as patient_id, p.level, p.proxy_id::text as proxy_id,
      p.added_at
    from patient_proxies p join patients pt on pt.id = p.patient_id
    where p.user_id = ${userId}::uuid and not pt.deleted and pt.erased_at is null
    order by p.added_at, p.patient_id`);
  return rows.map((r) => ({
    patientId: r.patient_id,
    level: r.level,
    proxyId: r.proxy_id,
    addedAt: new Date(r.added_at).toISOString(),
  }));
};

/**
 * Makes a user a proxy of the patient, or changes their level. Decided from
 * `proxies-<patientId>` and appended at the version it was read at: of
 * concurrent identical adds one appends and the others, deciding again on
 * the newer stream, are 409. Takes effect at once (the read model is inline).
 */
export const addProxy = async (
  store: EventStore,
  patientId: string,
  userId: string,
  level: ProxyLevel,
  metadata: EventMetadata,
): Promise<{ proxy: ProxyView; changed: boolean }> => {
  await requirePatient(store, patientId);
  await requireProxyCandidate(store, patientId, userId);
  const r = await handleCommand(store, proxyDecider, proxiesStream(patientId), {
    type: "AddProxy",
    patientId,
    userId,
    level,
    proxyId: crypto.randomUUID(),
  }, { metadata, unseal: false, retry: true });
  const proxy = (await listProxies(store, patientId)).find((p) => p.userId === userId);
  // only if the account was erased in between: its rows go with it
  if (!proxy) throw new NotFoundError("no such user");
  // a level change ends the old relation in the same append
  return { proxy, changed: r.events.length > 1 };
};

/** Ends a proxy relation at once; 404 when the user is no proxy of the patient. */
export const removeProxy = async (
  store: EventStore,
  patientId: string,
  userId: string,
  metadata: EventMetadata,
): Promise<void> => {
  await requirePatient(store, patientId);
  await handleCommand(store, proxyDecider, proxiesStream(patientId), {
    type: "RemoveProxy",
    patientId,
    userId,
  }, { metadata, unseal: false, retry: true });
};
