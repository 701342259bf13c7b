import type { Db } from "./db.ts";
import type { Projection, StoredEvent } from "./types.ts";

/** Folds one event into a projection, if it has a handler for it. */
export const applyEvent = async (db: Db, p: Projection, e: StoredEvent): Promise<void> => {
  const handler = p.handlers[e.type] ?? p.anyEvent;
  if (handler) await handler(db, e);
};

/** Whether folding an event of `type` into `p` runs any handler. */
export const handles = (p: Projection, type: string): boolean =>
  (p.handlers[type] ?? p.anyEvent) !== undefined;
