import { rebuildProjection } from "../../src/store/projection_engine.ts";
import type { Query } from "../../src/store/sql.ts";
import type { Projection } from "../../src/store/types.ts";
import type { Harness } from "./harness.ts";

/** An event of a projection test's log, appended to its stream as it comes. */
export interface GivenEvent {
  stream: string;
  type: string;
  data: Record<string, unknown>;
}

/**
 * Given these events, then these rows: appends `given` to the log (after
 * whatever it already holds), replays the projection over the whole log as a
 * rebuild does, and returns the rows `then` selects from its tables.
 */
export const givenEventsThenRows = async <T = Record<string, unknown>>(
  h: Harness,
  projection: Projection,
  given: readonly GivenEvent[],
  then: Query,
): Promise<T[]> => {
  for (const e of given) await h.store.append(e.stream, "any", [{ type: e.type, data: e.data }]);
  await rebuildProjection(h.store, projection);
  return await h.db.query<T>(then);
};
