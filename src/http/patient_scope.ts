import { z } from "@hono/zod-openapi";
import type { Context, MiddlewareHandler } from "hono";
import { type PatientResource, type RelationRule, relationsTo } from "../auth/policy.ts";
import { encounterPatient } from "../clinical/encounters.ts";
import { mediaPatient } from "../clinical/media.ts";
import { refuseErased, requireLivePatient } from "../clinical/visibility.ts";
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

/**
 * The patient resource for the policy: its id, the actor's relations to it,
 * and the grant or proxy relation behind them (for the request's metadata).
 */
export const resourceOf = async (
  c: Context<AppEnv>,
  patientId: string | undefined,
): Promise<PatientResource | undefined> => {
  if (!patientId) return undefined;
  const { store } = c.var.deps.runtime();
  await refuseErased(store, patientId);
  return await relationsTo(store.db, c.get("actor")!, patientId, relationRule(c));
};

/** The patient in the path (`/v1/patients/:id/...`). */
export const byPatient = async (c: Context<AppEnv>) => resourceOf(c, await patientInPath(c));
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
