import { z } from "zod";
import { defineEvent } from "../src/store/catalog.ts";

/**
 * Family access: a user acting for a patient. Stream `proxies-<patientId>`.
 * A `full` proxy reads and acts as the patient does (shares codes, revokes
 * grants, uploads documents); a `read_only` one only reads. `proxyId` names
 * this proxy relation in the metadata (`grantId`) of every event written
 * through it.
 */
export const PROXY_LEVELS = ["full", "read_only"] as const;
export type ProxyLevel = (typeof PROXY_LEVELS)[number];

export const ProxyAdded = defineEvent({
  type: "ProxyAdded",
  version: 1,
  schema: z.strictObject({
    proxyId: z.uuid(),
    patientId: z.uuid(),
    userId: z.uuid(),
    level: z.enum(PROXY_LEVELS),
  }),
});

export const ProxyRemoved = defineEvent({
  type: "ProxyRemoved",
  version: 1,
  schema: z.strictObject({ proxyId: z.uuid(), patientId: z.uuid(), userId: z.uuid() }),
});

/**
 * A read of a patient's proxy list (who acts for the patient): the users
 * returned. Stream `access-<actorId>`, as every audited read.
 */
export const ProxiesViewed = defineEvent({
  type: "ProxiesViewed",
  version: 1,
  schema: z.strictObject({ patientId: z.uuid(), userIds: z.array(z.uuid()) }),
});

export const proxyEvents = [ProxyAdded, ProxyRemoved, ProxiesViewed];
