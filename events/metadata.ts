import { z } from "zod";

/**
 * Metadata carried by every event: who acted, in which role, from where, and
 * why. It is audit data: ids and enums, never PHI.
 */
export const EventMetadata = z.strictObject({
  actorId: z.string().max(200).optional(),
  actorRole: z.string().max(50).optional(),
  onBehalfOf: z.string().max(200).optional(),
  grantId: z.string().max(200).optional(),
  ip: z.string().max(100).optional(),
  userAgent: z.string().max(500).optional(),
  requestId: z.string().max(200).optional(),
  correlationId: z.string().max(200).optional(),
  causationId: z.string().max(200).optional(),
  reason: z.string().max(1000).optional(),
});
export type EventMetadata = z.infer<typeof EventMetadata>;
