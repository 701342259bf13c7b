import { z } from "@hono/zod-openapi";
import type { Context, MiddlewareHandler } from "hono";
import { type PatientResource, type RelationRule, relationsTo } from "../auth/policy.ts";
import { encounterPatient } from "../clinical/encounters.ts";
import { mediaPatient } from "../clinical/media.ts";
import {
  type PatientRowState,
  patientRowState,
  requireLivePatient,
} from "../clinical/visibility.ts";
import { GoneError } from "../errors.ts";
import { prefetchPatient } from "../clinical/patients.ts";
import type { AppEnv } from "./env.ts";

/** Finds the patient a request is about (undefined: none, or no such record). */
export type PatientOf = (c: Context<AppEnv>) => Promise<string | undefined>;

/** The relation rule's inputs for this request: the runtime's clock and the configured window. */
export const relationRule = (c: Context<AppEnv>): RelationRule => ({
  now: c.var.deps.runtime().sessions.now(),
  encounterAccessDays: c.var.deps.config.encounterAccessDays,
});

/** Memoised per request: the policy and the deleted-patient check ask the same question. */
const perRequest = (find: (c: Context<AppEnv>, id: string) => Promise<string | undefined>) => {
  const seen = new WeakMap<Context<AppEnv>, Promise<string | undefined>>();
  return ((c) => {
    let p = seen.get(c);
    if (!p) {
      const id = c.req.param("id");
      p = id && z.uuid().safeParse(id).success ? find(c, id) : Promise.resolve(undefined);
      seen.set(c, p);
    }
    return p;
  }) satisfies PatientOf;
};

/** `/v1/patients/:id/...` */
export const patientInPath: PatientOf = perRequest((_c, id) => Promise.resolve(id));
/** `/v1/encounters/:id...`: the encounter's patient. */
export const patientOfEncounter: PatientOf = perRequest((c, id) =>
  encounterPatient(c.var.deps.runtime().store, id)
);
/** `/v1/media/:id...`: the media item's patient. */
export const patientOfMedia: PatientOf = perRequest((c, id) =>
  mediaPatient(c.var.deps.runtime().store, id)
);

const rowStates = new WeakMap<Context<AppEnv>, Map<string, Promise<PatientRowState | undefined>>>();

/**
 * The patients row's state (exists, deleted, erased) as this request first
 * read it: memoised per request (see {@link byPatientRecord}, which reads it
 * with the record).
 */
const patientRowOf = (
  c: Context<AppEnv>,
  patientId: string,
): Promise<PatientRowState | undefined> => {
  let byId = rowStates.get(c);
  if (!byId) rowStates.set(c, byId = new Map());
  let p = byId.get(patientId);
  if (!p) byId.set(patientId, p = patientRowState(c.var.deps.runtime().store, patientId));
  return p;
};

const prefetched = new WeakMap<Context<AppEnv>, ReturnType<typeof prefetchPatient>>();

/**
 * Reads the patient's row state and its sealed stream in one query, and
 * answers this request's {@link patientRowOf} from it: a current read of
 * the record then costs one query before the policy check and none after.
 */
const prefetchRecord = (c: Context<AppEnv>, patientId: string) => {
  let p = prefetched.get(c);
  if (!p) {
    p = prefetchPatient(c.var.deps.runtime().store, patientId);
    prefetched.set(c, p);
    let byId = rowStates.get(c);
    if (!byId) rowStates.set(c, byId = new Map());
    byId.set(patientId, p.then((r) => r.row));
  }
  return p;
};

/** The sealed stream {@link byPatientRecord} read for this request, if it did. */
export const prefetchedRecord = (c: Context<AppEnv>) => prefetched.get(c);

/**
 * The patient resource for the policy: its id, the actor's relations to it,
 * and the grant or proxy relation behind them (for the request's metadata).
 * An erased patient is 410 before any policy question.
 */
export const resourceOf = async (
  c: Context<AppEnv>,
  patientId: string | undefined,
): Promise<PatientResource | undefined> => {
  if (!patientId) return undefined;
  const { store } = c.var.deps.runtime();
  if ((await patientRowOf(c, patientId))?.erased) throw new GoneError("the patient was erased");
  return await relationsTo(store.db, c.get("actor")!, patientId, relationRule(c));
};

/** The patient in the path (`/v1/patients/:id/...`). */
export const byPatient = async (c: Context<AppEnv>) => resourceOf(c, await patientInPath(c));
/**
 * As {@link byPatient}, for a read of the record itself: its stream is read
 * (sealed) with the row state the policy needs (see {@link prefetchedRecord}).
 * Not for an as-of read, which folds its own prefix of the stream.
 */
export const byPatientRecord = async (c: Context<AppEnv>) => {
  const id = await patientInPath(c);
  // awaited through patientRowOf, which reports a failure
  if (id && c.req.query("asOf") === undefined) void prefetchRecord(c, id).catch(() => {});
  return await resourceOf(c, id);
};
/** The patient the encounter in the path belongs to (`/v1/encounters/:id`). */
export const byEncounter = async (c: Context<AppEnv>) => resourceOf(c, await patientOfEncounter(c));
/** The patient the media item in the path belongs to (`/v1/media/:id`). */
export const byMedia = async (c: Context<AppEnv>) => resourceOf(c, await patientOfMedia(c));

/**
 * The patient under the sub-resource must be live for the actor (see
 * {@link requireLivePatient}: 410 erased, 404 soft-deleted unless the actor
 * may see deleted patients). Placed after `authorize`, so who may not act at
 * all still gets the 403 and its event.
 */
export const livePatient = (patientOf: PatientOf): MiddlewareHandler<AppEnv> =>
  async function livePatient(c, next) {
    const id = await patientOf(c);
    if (id) await requireLivePatient(c.var.deps.runtime().store, c.get("actor")!, id);
    await next();
  };
