import { z } from "zod";
import { defineEvent } from "../src/store/catalog.ts";

/**
 * A data subject's key was destroyed (crypto-shredding): every PHI field
 * sealed with it now reads as erased. The fact itself stays in the log.
 */
export const SubjectKeyDestroyed = defineEvent({
  type: "SubjectKeyDestroyed",
  version: 1,
  schema: z.strictObject({
    subjectId: z.string().min(1).max(200),
    reason: z.string().min(1).max(1000),
  }),
});

export const subjectEvents = [SubjectKeyDestroyed];
