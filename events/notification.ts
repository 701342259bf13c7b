import { z } from "zod";
import { defineEvent } from "../src/store/catalog.ts";

/**
 * The outbox's delivery record. Stream `notification-<notificationId>`: one
 * stream per notification (a recipient and a channel), so that the worker
 * appends each outcome at the version it last folded and two deliveries of
 * one notification cannot both be recorded. Ids, channels and short error
 * classes only: never the code, an address or a server's message (which can
 * quote either).
 */
export const NOTIFICATION_CHANNELS = ["in_app", "email"] as const;
export type NotificationChannel = (typeof NOTIFICATION_CHANNELS)[number];

const notificationId = z.uuid();
const channel = z.enum(NOTIFICATION_CHANNELS);

/** The notification reached its channel (in-app: it is in the recipient's inbox). */
export const NotificationDelivered = defineEvent({
  type: "NotificationDelivered",
  version: 1,
  schema: z.strictObject({ notificationId, channel }),
});

/**
 * An attempt failed. `error` is a class (`smtp_econnection`, `code_expired`,
 * …); with `retryAt` the worker tries again then, without it it gave up.
 */
export const NotificationFailed = defineEvent({
  type: "NotificationFailed",
  version: 1,
  schema: z.strictObject({
    notificationId,
    channel,
    attempt: z.number().int().min(1),
    error: z.string().regex(/^[a-z0-9_]{1,64}$/),
    retryAt: z.iso.datetime({ offset: true }).optional(),
  }),
});

export const notificationEvents = [NotificationDelivered, NotificationFailed];
