import { type Role, ROLES } from "../../events/user.ts";
import type { Db } from "../store/db.ts";
import { ident, type Query, sql } from "../store/sql.ts";

/** Who is asking: from a verified access token and the current users row. */
export interface Actor {
  userId: string;
  role: Role;
  sessionId: string;
  patientId: string | null;
  /**
   * The role must use a second factor and this user has not enrolled yet:
   * until they do, they may only enrol (and read themselves, or log out).
   */
  mfaPending: boolean;
}

/** How an actor stands to one patient. */
export type Relation =
  | "self"
  | "care_team"
  | "encounter_practitioner"
  | "active_grant"
  | "proxy"
  | "full_proxy"
  | "clinic_owner";

/** A patient-scoped resource: whose record it is and the actor's relations to it. */
export interface PatientResource {
  patientId: string;
  relations: readonly Relation[];
  /** When `active_grant` holds: the grant it stands on (the latest to expire). */
  grantId?: string;
  /** When `proxy` (or `full_proxy`) holds: the proxy relation's id. */
  proxyId?: string;
}

/** Everything the API lets someone do, named `<resource>.<verb>`. */
export const ACTIONS = [
  "user.create",
  "user.list",
  "user.read",
  "user.update",
  "me.read",
  "me.update",
  "session.logout",
  "mfa.manage",
  "patient.create",
  "patient.list",
  "patient.read",
  "patient.update",
  "patient.delete",
  "patient.restore",
  "patient.erase",
  "patient.see_deleted",
  "patient.history",
  "patient.read_as_of",
  "careteam.manage",
  "proxy.manage",
  "proxy.list",
  "encounter.create",
  "encounter.list",
  "encounter.read",
  "encounter.update",
  "chart.read",
  "chart.write",
  "chart.write_own",
  "chart.amend",
  "chart.acknowledge",
  "media.upload",
  "media.upload_document",
  "media.list",
  "media.read",
  "media.delete",
  "media.restore",
  "media.see_deleted",
  "media.stats",
  "media.categories",
  "clinic.create",
  "clinic.read",
  "clinic.update",
  "clinic.manage_practitioners",
  "clinic.manage_owners",
  "practitioner_profile.read",
  "practitioner_profile.update",
  "notification.read_own",
  "outbox.read",
  "grant.list",
  "grant.list_own",
  "grant.revoke",
  "breakglass.use",
  "breakglass.list",
  "breakglass.review",
  "audit.events",
  "audit.activity",
  "audit.stream",
  "audit.disclosures",
  "audit.export",
  "audit.checkpoints",
  "audit.proofs",
  "access.request",
  "access.verify",
  "access.requests_own",
  "access.share",
  "access.redeem",
  "dashboard.read",
  "analytics.read",
] as const;
export type Action = (typeof ACTIONS)[number];

/** A cell of the matrix: always, never, or only with a relation to the patient. */
export type Grant = "yes" | "no" | "related";

const ALL: readonly Role[] = ROLES;
const row = (yes: readonly Role[], related: readonly Role[] = []) =>
  Object.fromEntries(
    ROLES.map((r) => [r, yes.includes(r) ? "yes" : related.includes(r) ? "related" : "no"]),
  ) as Record<Role, Grant>;

/**
 * The role × action matrix. The README prints it and the RBAC test walks it
 * over every route, so the three cannot drift apart. "related" needs one of
 * the role's {@link RELATIONS} to the patient in question.
 */
export const RBAC: Readonly<Record<Action, Readonly<Record<Role, Grant>>>> = {
  "user.create": row(["admin"]),
  "user.list": row(["admin"]),
  "user.read": row(["admin"]),
  "user.update": row(["admin"]),
  "me.read": row(ALL),
  "me.update": row(ALL),
  "session.logout": row(ALL),
  "mfa.manage": row(ALL),
  "patient.create": row(["admin", "clinical_ops", "reception"]),
  // practitioners' lists hold only the patients they have a relation to
  "patient.list": row(["admin", "clinical_ops", "reception", "practitioner"]),
  "patient.read": row(["admin", "clinical_ops", "reception"], ["practitioner", "patient"]),
  "patient.update": row(["admin", "clinical_ops", "reception"], ["practitioner"]),
  "patient.delete": row(["admin", "clinical_ops"]),
  "patient.restore": row(["admin"]),
  // irreversible: crypto-shreds the record and the patient's own accounts
  "patient.erase": row(["admin"]),
  "patient.see_deleted": row(["admin"]),
  // auditors get their own audited surface, not the clinical API's current PHI
  "patient.history": row(["admin", "clinical_ops"]),
  // on top of patient.read: an as-of read of today is a read
  "patient.read_as_of": row(["admin"]),
  "careteam.manage": row(["admin", "clinical_ops"]),
  // family access: the patient (self) adds and removes proxies; see ACTION_RELATIONS
  "proxy.manage": row(["admin"], ["patient"]),
  "proxy.list": row(["admin"], ["patient"]),
  // encounters carry clinical content (the reason): reception and analysts stay out
  "encounter.create": row(["admin", "clinical_ops"], ["practitioner"]),
  "encounter.list": row(["admin", "clinical_ops"], ["practitioner", "patient"]),
  "encounter.read": row(["admin", "clinical_ops"], ["practitioner", "patient"]),
  "encounter.update": row(["admin", "clinical_ops"], ["practitioner"]),
  // the clinical chart: reception, analysts and auditors see none of it; a clinic owner
  // only the entries recorded at their clinics ({@link chartEntryScope})
  "chart.read": row(["admin", "clinical_ops"], ["practitioner", "patient", "clinic_owner"]),
  // professional entries: a practitioner with a care relation or an active grant
  "chart.write": row([], ["practitioner"]),
  // patient-entered entries (allergies, home medication): the patient or a full proxy
  "chart.write_own": row([], ["patient"]),
  // a new version or entered-in-error; a patient only of patient-entered entries
  "chart.amend": row([], ["practitioner", "patient"]),
  // a lab result seen: a related practitioner, and the route admits only the one who ordered it
  "chart.acknowledge": row([], ["practitioner"]),
  // photos and documents are clinical content too; a patient may read their own
  // photos to encounters are the clinicians' record: never the patient role's
  "media.upload": row(["admin", "clinical_ops"], ["practitioner"]),
  // documents to the record: the patient and their full proxies too
  "media.upload_document": row(["admin", "clinical_ops"], ["practitioner", "patient"]),
  "media.list": row(["admin", "clinical_ops"], ["practitioner", "patient"]),
  "media.read": row(["admin", "clinical_ops"], ["practitioner", "patient"]),
  "media.delete": row(["admin", "clinical_ops"], ["practitioner"]),
  "media.restore": row(["admin"]),
  "media.see_deleted": row(["admin"]),
  "media.stats": row(["admin", "clinical_ops"]),
  "media.categories": row(ALL),
  "clinic.create": row(["admin", "clinical_ops"]),
  // the clinic directory holds no PHI: any signed-in user reads it
  "clinic.read": row(ALL),
  "clinic.update": row(["admin", "clinical_ops"]),
  // membership is what a clinic grant reaches through: only operations staff change it
  "clinic.manage_practitioners": row(["admin", "clinical_ops"]),
  // ownership is what a clinic owner reads the clinic's chart entries through: admins only
  "clinic.manage_owners": row(["admin"]),
  // a practitioner's professional profile is part of the directory
  "practitioner_profile.read": row(ALL),
  // "related" here is `self`: a practitioner edits their own profile only
  "practitioner_profile.update": row(["admin"], ["practitioner"]),
  // one's own inbox: the list holds only the caller's notifications
  "notification.read_own": row(ALL),
  // the development outbox (codes included); the route is a 404 in production
  "outbox.read": row(["admin"]),
  // a patient's grants (purposes are PHI): the patient and their full proxies, and admins
  "grant.list": row(["admin"], ["patient"]),
  // the grants a practitioner can use, directly or through a clinic
  "grant.list_own": row(["practitioner"]),
  // the route finds the grant's patient; revoking is the patient's (or a full proxy's) call
  "grant.revoke": row(["admin"], ["patient"]),
  // emergency access needs no relation (that is its point), only a reason, and is reviewed
  "breakglass.use": row(["practitioner"]),
  "breakglass.list": row(["admin", "auditor"]),
  "breakglass.review": row(["admin", "auditor"]),
  // the audit surface: ids, times and metadata of every event; each use is itself an event
  "audit.events": row(["admin", "auditor"]),
  "audit.activity": row(["admin", "auditor"]),
  // a record's past state is PHI: the read is audited like any other
  "audit.stream": row(["admin", "auditor"]),
  // who saw a patient's record and why (an accounting of disclosures): audited as an audit query
  "audit.disclosures": row(["admin", "auditor"]),
  // the whole log out (as stored, CSV or FHIR): audited before the first byte
  "audit.export": row(["admin", "auditor"]),
  // the transparency log: signed checkpoints and proofs (hashes only, no PHI); audited too
  "audit.checkpoints": row(["admin", "auditor"]),
  "audit.proofs": row(["admin", "auditor"]),
  // asking needs no relation to the patient: it is how a practitioner without one gets one
  "access.request": row(["practitioner"]),
  // only the practitioner who asked (anyone else: 404)
  "access.verify": row(["practitioner"]),
  "access.requests_own": row(["practitioner"]),
  // the patient themselves or a full proxy ({@link ACTION_RELATIONS})
  "access.share": row([], ["patient"]),
  // only the practitioner named on the share, or a member of the clinic named
  "access.redeem": row(["practitioner"]),
  // a practitioner's own working set: every list in it is narrowed to related patients
  "dashboard.read": row(["practitioner"]),
  // de-identified aggregates (HIPAA Safe Harbor, small cells suppressed): analysts only
  "analytics.read": row(["analyst"]),
};

/**
 * Which relations count, per role, where the matrix says "related" (unless
 * {@link ACTION_RELATIONS} narrows them for one action). A `proxy` is any
 * family proxy of the patient; a `full_proxy` one whose level is full (it
 * is a proxy too).
 */
export const RELATIONS: Readonly<Partial<Record<Role, readonly Relation[]>>> = {
  practitioner: ["care_team", "encounter_practitioner", "active_grant"],
  patient: ["self", "proxy"],
  // only chart.read is "related" for clinic owners, and only in part (chartEntryScope)
  clinic_owner: ["clinic_owner"],
};

/**
 * Actions whose "related" cells need other relations than the role's
 * {@link RELATIONS}: what a patient user may do besides reading is done as
 * the patient or as a full proxy, never as a read-only one.
 */
export const ACTION_RELATIONS: Readonly<
  Partial<Record<Action, Readonly<Partial<Record<Role, readonly Relation[]>>>>>
> = {
  // the resource is the practitioner's own profile (see ownProfile), not a patient record
  "practitioner_profile.update": { practitioner: ["self"] },
  // only the patient decides who acts for them: no proxy makes or ends proxies
  "proxy.manage": { patient: ["self"] },
  // a full proxy acts as the patient does, so it sees who else does; a read-only one does not
  "proxy.list": { patient: ["self", "full_proxy"] },
  "media.upload_document": { patient: ["self", "full_proxy"] },
  "grant.list": { patient: ["self", "full_proxy"] },
  "grant.revoke": { patient: ["self", "full_proxy"] },
  "access.share": { patient: ["self", "full_proxy"] },
  "chart.write_own": { patient: ["self", "full_proxy"] },
  "chart.amend": { patient: ["self", "full_proxy"] },
};

/** The relations that qualify `role` for `action` where its cell says "related". */
export const relationsFor = (action: Action, role: Role): readonly Relation[] =>
  ACTION_RELATIONS[action]?.[role] ?? RELATIONS[role] ?? [];

/**
 * A practitioner profile as a resource for {@link can}: `self` when it is
 * the actor's own. The id in `patientId` is the practitioner's user id (a
 * practitioner's `self` never comes from the patient relations: they have
 * no patient record, so {@link relationsOf} drops it for them).
 */
export const ownProfile = (actor: Actor, userId: string): PatientResource => ({
  patientId: userId,
  relations: actor.userId === userId ? ["self"] : [],
});

/** What an actor with {@link Actor.mfaPending} may still do. */
const MFA_ENROLMENT: readonly Action[] = ["me.read", "mfa.manage", "session.logout"];

/** Refused only because the actor must enrol a second factor first. */
export const needsEnrolment = (actor: Actor, action: Action): boolean =>
  actor.mfaPending && !MFA_ENROLMENT.includes(action);

/**
 * Whether the role may ever perform `action` (its cell is not "no"): the
 * gate in front of a route whose patient is only known once the body is
 * validated; the relation is asked for after that, with {@link can}.
 */
export const mayEver = (actor: Actor, action: Action): boolean =>
  !needsEnrolment(actor, action) && RBAC[action][actor.role] !== "no";

/**
 * The one place that decides access. Handlers ask `can`; they never test
 * roles themselves. A "related" grant needs the patient resource; without
 * one (or without a qualifying relation) the answer is no.
 */
export const can = (actor: Actor, action: Action, resource?: PatientResource): boolean => {
  if (needsEnrolment(actor, action)) return false;
  const grant = RBAC[action][actor.role];
  if (grant === "yes") return true;
  if (grant === "no" || !resource) return false;
  const allowed = relationsFor(action, actor.role);
  return resource.relations.some((r) => allowed.includes(r));
};

/**
 * What the relation rule needs besides the actor: the clock, and how long a
 * finished encounter keeps its practitioner related (CHARTLOG_ENCOUNTER_ACCESS_DAYS).
 */
export interface RelationRule {
  now: Date;
  encounterAccessDays: number;
}

/**
 * Each relation as SQL: the ids of the patients the actor stands in that
 * relation to. Single reads ({@link relationsQuery}) and list filters
 * ({@link listFilter}) are both built from these, so they cannot disagree.
 *
 * - care team: membership, ended at once by removal;
 * - encounter practitioner: named on an encounter that is planned or in
 *   progress, or that finished less than `encounterAccessDays` ago; a
 *   cancelled encounter grants nothing (it never happened);
 * - self: a patient user's own record;
 * - proxy / full proxy: a family member the patient (or an admin) added, at
 *   any level / at level full; removal ends it at once;
 * - clinic owner: the patient has a chart entry (any, entered in error
 *   included) recorded at a clinic the actor owns; removal ends it at once;
 * - active grant: a grant to the practitioner, or to a clinic where they
 *   are an active member of an active clinic, that is neither revoked nor
 *   past its expiry by the rule's clock (the sweeper's AccessGrantExpired
 *   only records an end the clock has already enforced).
 */
const RELATION_SQL: Partial<Record<Relation, (actor: Actor, rule: RelationRule) => Query>> = {
  self: (actor) => sql`select ${actor.patientId}::uuid as patient_id`,
  care_team: (actor) =>
    sql`select patient_id from care_team where practitioner_id = ${actor.userId}::uuid`,
  encounter_practitioner: (actor, rule) => {
    const since = new Date(rule.now.getTime() - rule.encounterAccessDays * 86_400_000);
    return sql`select patient_id from encounters
      where practitioner_id = ${actor.userId}::uuid
        and (status in ('planned', 'in_progress')
          or (status = 'finished' and finished_at > ${since}::timestamptz))`;
  },
  proxy: (actor) =>
    sql`select patient_id from patient_proxies where user_id = ${actor.userId}::uuid`,
  full_proxy: (actor) =>
    sql`select patient_id from patient_proxies
      where user_id = ${actor.userId}::uuid and level = 'full'`,
  active_grant: (actor, rule) => sql`select patient_id ${usableGrants(actor, rule)}`,
  clinic_owner: (actor) =>
    sql`select patient_id from chart_entries where ${ownedClinicEntries(actor)}`,
};

/** `chart_entries` rows recorded at a clinic the actor owns now. */
const ownedClinicEntries = (actor: Pick<Actor, "userId">) =>
  sql`clinic_id in (select clinic_id from clinic_owners where user_id = ${actor.userId}::uuid)`;

/**
 * Which of a readable patient's chart entries the actor sees: null for all
 * of them, else a condition on `chart_entries` that lists, single reads and
 * histories all apply (a clinic owner: the entries recorded at the clinics
 * they own; any other entry is a 404, so its existence does not show).
 */
export const chartEntryScope = (actor: Actor): Query | null =>
  actor.role === "clinic_owner" ? ownedClinicEntries(actor) : null;

/**
 * `from access_grants g where …`: the grants the actor can use now (the
 * `active_grant` relation), to select patients or the grant itself from.
 */
export const usableGrants = (actor: Pick<Actor, "userId">, rule: Pick<RelationRule, "now">) =>
  sql`from access_grants g
      where g.status = 'active' and g.expires_at > ${rule.now}::timestamptz
        and ((g.grantee_kind = 'practitioner' and g.grantee_id = ${actor.userId}::uuid)
          or (g.grantee_kind = 'clinic' and g.grantee_id in (
            select m.clinic_id from clinic_practitioners m join clinics c on c.id = m.clinic_id
            where m.user_id = ${actor.userId}::uuid and m.active and c.active)))`;

/**
 * The ids behind a grant or proxy relation, as extra columns of
 * {@link relationsQuery}: which grant (the latest to expire) or which proxy
 * relation lets the actor in, for the metadata of what they then write.
 */
const RELATION_ID_SQL: Partial<
  Record<Relation, (actor: Actor, patientId: string, rule: RelationRule) => Query>
> = {
  active_grant: (actor, patientId, rule) =>
    sql`(select g.id::text ${usableGrants(actor, rule)} and g.patient_id = ${patientId}::uuid
      order by g.expires_at desc, g.id limit 1) as active_grant_id`,
  proxy: (actor, patientId) =>
    sql`(select proxy_id::text from patient_proxies
      where user_id = ${actor.userId}::uuid and patient_id = ${patientId}::uuid) as proxy_id`,
};

/**
 * The relations that can hold for this actor at all: those any action lets
 * its role use, that have a rule (and `self` only for a user who is a patient).
 */
const relationsOf = (actor: Actor): Relation[] => {
  const all = new Set<Relation>(RELATIONS[actor.role] ?? []);
  for (const byRole of Object.values(ACTION_RELATIONS)) {
    for (const r of byRole?.[actor.role] ?? []) all.add(r);
  }
  return [...all].filter((r) => RELATION_SQL[r] && (r !== "self" || actor.patientId !== null));
};

/**
 * One query answering which of the actor's relations hold to `patientId`:
 * a row of booleans named by relation, or null when the role has none.
 */
const relationsQuery = (
  actor: Actor,
  patientId: string,
  rule: RelationRule,
): Query | null => {
  const rels = relationsOf(actor);
  if (rels.length === 0) return null;
  const cols = rels.map((r, i) =>
    sql`${i === 0 ? sql`` : sql`,`} ${patientId}::uuid in (${RELATION_SQL[r]!(actor, rule)}) as ${
      ident(r)
    }`
  );
  const ids = (["active_grant", "proxy"] as const)
    .filter((r) => rels.includes(r) || (r === "proxy" && rels.includes("full_proxy")))
    .map((r) => sql`, ${RELATION_ID_SQL[r]!(actor, patientId, rule)}`);
  return sql`select ${[...cols, ...ids].reduce((a, b) => sql`${a}${b}`, sql``)}`;
};

/**
 * The actor's relations to one patient, for {@link can}: one query, none at
 * all for a role without relations.
 */
export const relationsTo = async (
  db: Db,
  actor: Actor,
  patientId: string,
  rule: RelationRule,
): Promise<PatientResource> => {
  const q = relationsQuery(actor, patientId, rule);
  if (!q) return { patientId, relations: [] };
  const [r] = await db.query<Record<string, boolean | string | null>>(q);
  const { active_grant_id: grantId, proxy_id: proxyId, ...flags } = r ?? {};
  const relations = Object.entries(flags).filter(([, v]) => v === true)
    .map(([k]) => k as Relation);
  return {
    patientId,
    relations,
    ...(relations.includes("active_grant") && typeof grantId === "string" ? { grantId } : {}),
    ...(typeof proxyId === "string" ? { proxyId } : {}),
  };
};

/** Relations that stand on something the patient handed out, named in the metadata. */
const DELEGATED: readonly Relation[] = ["active_grant", "proxy", "full_proxy"];

/**
 * What an allowed action stood on, when that was only a grant or a proxy:
 * `grantId` (the grant's id, or the proxy relation's) and, for a proxy,
 * `onBehalfOf` (the patient). Empty when the role needs no relation, or a
 * relation of the actor's own (care team, encounter, self) also qualifies:
 * then the actor did not need the grant.
 */
export const delegation = (
  actor: Actor,
  action: Action,
  resource: PatientResource,
): { grantId?: string; onBehalfOf?: string } => {
  if (RBAC[action][actor.role] !== "related") return {};
  const allowed = relationsFor(action, actor.role);
  const used = resource.relations.filter((r) => allowed.includes(r));
  if (used.length === 0 || used.some((r) => !DELEGATED.includes(r))) return {};
  if (used.includes("active_grant") && resource.grantId) return { grantId: resource.grantId };
  if (resource.proxyId) return { grantId: resource.proxyId, onBehalfOf: resource.patientId };
  return {};
};

/**
 * The list filter on `patients.id`: null when the actor reads every patient
 * (patient.read is "yes"), else `patients.id in (<related patients>)`,
 * the same rule {@link relationsQuery} applies to single reads. A role that
 * reads no patient gets a filter that matches none.
 */
export const listFilter = (actor: Actor, rule: RelationRule): Query | null => {
  const grant = RBAC["patient.read"][actor.role];
  if (grant === "yes") return null;
  const qualifying = relationsFor("patient.read", actor.role);
  const rels = grant === "related" ? relationsOf(actor).filter((r) => qualifying.includes(r)) : [];
  if (rels.length === 0) return sql`false`;
  const union = rels.map((r) => RELATION_SQL[r]!(actor, rule))
    .reduce((a, b) => sql`${a} union ${b}`);
  return sql`patients.id in (${union})`;
};

/**
 * What planning an encounter that names `practitionerId` needs besides
 * `encounter.create` on the patient: naming anyone but yourself hands them
 * a relation to the patient (encounter practitioner), which is care-team
 * management. Null when nothing more is needed; otherwise the action that
 * is refused (the router answers 403 and records the `AccessDenied`).
 */
export const refusedToPlanFor = (actor: Actor, practitionerId: string): Action | null =>
  practitionerId === actor.userId || can(actor, "careteam.manage") ? null : "careteam.manage";
