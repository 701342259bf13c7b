import { createHash } from "node:crypto";
import type { EventMetadata } from "../../events/metadata.ts";
import type { StoredEvent } from "./stored_event.ts";

/**
 * Each event of the log as FHIR R4 `AuditEvent` resources following IHE
 * Basic Audit Log Patterns (BALP, profiles.ihe.net/ITI/BALP). The mapping of
 * every event type is {@link RULES}; the README's "Export" table says the
 * same in prose. Only ids, codes, times and request metadata go out: never a
 * payload's PHI (sealed or not), never a search's terms (the log does not
 * keep them).
 */

const DCM = "http://dicom.nema.org/resources/ontology/DCM";
const EVENT_TYPE = "http://terminology.hl7.org/CodeSystem/audit-event-type";
const INTERACTION = "http://hl7.org/fhir/restful-interaction";
const PARTICIPATION = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType";
const ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type";
const OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role";
const BALP_ENTITY = "https://profiles.ihe.net/ITI/BALP/CodeSystem/BasicAuditEntityType";
const ACT_REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason";
const SOURCE_TYPE = "http://terminology.hl7.org/CodeSystem/security-source-type";
const PROFILE = "https://profiles.ihe.net/ITI/BALP/StructureDefinition/IHE.BasicAudit.";
/** Chartlog's own identifier systems (users, roles, ids without a FHIR resource). */
export const CHARTLOG_SYSTEM = "urn:chartlog";

type Coding = { system: string; code: string; display?: string };
type Reference = {
  reference?: string;
  identifier?: { system?: string; value: string };
  display?: string;
};
// deno-lint-ignore no-explicit-any
export type AuditEventResource = Record<string, any>;

const dcm = (code: string, display: string): Coding => ({ system: DCM, code, display });

/** How one event type is told in BALP terms. */
type Kind =
  | "read" // IHE.BasicAudit.PatientRead / Read: rest + read|vread, action R
  | "query" // IHE.BasicAudit.PatientQuery / Query: rest + search, action E
  | "create" // PatientCreate / Create: rest + create, action C
  | "update" // PatientUpdate / Update: rest + update, action U
  | "delete" // PatientDelete / Delete: rest + delete, action D
  | "login" // DICOM 110114 User Authentication, 110122 Login
  | "logout" // DICOM 110114 User Authentication, 110123 Logout
  | "security" // DICOM 110113 Security Alert, 110137 User Security Attributes Changed
  | "denied" // the refused interaction (by the policy action's verb), outcome 4
  | "export" // DICOM 110106 Export (a notification leaving the system), action R
  | "activity"; // DICOM 110100 Application Activity, action E

type Data = Record<string, unknown>;

interface Rule {
  kind: Kind;
  /** The data entity (BALP entity:data, role 4): what was read, created, changed. */
  what?: (d: Data) => Reference | null;
  /** vread for reads as of a time (and histories). */
  vread?: (d: Data) => boolean;
  /**
   * Queries, FHIR search style: what was asked, for which patient, without
   * any search term (the log keeps none).
   */
  query?: (d: Data, patientId: string | null) => string;
  /** A failure even though the event was recorded (outcome 4, or 8 for `serious`). */
  failure?: (d: Data) => { serious?: boolean; desc: string } | null;
}

const str = (v: unknown): string | null => (typeof v === "string" && v ? v : null);
const ref = (type: string, field: string) => (d: Data): Reference | null => {
  const id = str(d[field]);
  return id ? { reference: `${type}/${id}` } : null;
};
const ident = (kind: string, field: string) => (d: Data): Reference | null => {
  const id = str(d[field]);
  return id ? { identifier: { system: `${CHARTLOG_SYSTEM}:${kind}`, value: id } } : null;
};
const patient = ref("Patient", "patientId");
const failed = (desc: string) => () => ({ desc });

/** The FHIR resource each chart kind is closest to. */
const CHART_RESOURCES: Readonly<Record<string, string>> = {
  visits: "ClinicalImpression",
  prescriptions: "MedicationRequest",
  "lab-tests": "DiagnosticReport",
  allergies: "AllergyIntolerance",
  vaccinations: "Immunization",
};
const chartResource = (d: Data) => CHART_RESOURCES[String(d.kind)] ?? "Basic";
const chartEntry = (d: Data): Reference | null =>
  str(d.entryId) ? { reference: `${chartResource(d)}/${d.entryId}` } : null;

/** Every event type Chartlog writes, in BALP terms (a test holds this to the catalog). */
export const RULES: Readonly<Record<string, Rule>> = {
  // reads of PHI (stream access-<actor>)
  PatientViewed: { kind: "read", what: patient, vread: (d) => d.asOf != null },
  PatientHistoryViewed: {
    kind: "read",
    what: (d) => (str(d.patientId) ? { reference: `Patient/${d.patientId}/_history` } : null),
    vread: () => true,
  },
  CareTeamViewed: { kind: "read", what: ref("CareTeam", "patientId") },
  EncounterViewed: { kind: "read", what: ref("Encounter", "encounterId") },
  MediaViewed: { kind: "read", what: ref("Media", "mediaId") },
  MediaDownloaded: { kind: "read", what: ref("Media", "mediaId") },
  MediaThumbnailViewed: { kind: "read", what: ref("Media", "mediaId") },
  ChartEntryViewed: { kind: "read", what: chartEntry, vread: (d) => d.history === true },
  AuditStreamViewed: {
    kind: "read",
    what: (d) => ({
      identifier: { system: `${CHARTLOG_SYSTEM}:stream`, value: String(d.streamId) },
    }),
    vread: () => true,
  },
  // lists and searches: one AuditEvent per patient returned
  PatientsSearched: { kind: "query", query: () => "Patient?" },
  EncountersListed: { kind: "query", query: (_d, p) => `Encounter?patient=${p}` },
  MediaListed: {
    kind: "query",
    query: (d, p) => `Media?patient=${p}${str(d.encounterId) ? `&encounter=${d.encounterId}` : ""}`,
  },
  ChartEntriesListed: {
    kind: "query",
    query: (d, p) =>
      `${chartResource(d)}?patient=${p}${str(d.encounterId) ? `&encounter=${d.encounterId}` : ""}`,
  },
  ProxiesViewed: { kind: "query", query: (_d, p) => `RelatedPerson?patient=${p}` },
  GrantsViewed: { kind: "query", query: (_d, p) => `Consent?patient=${p}` },
  BreakGlassViewed: {
    kind: "query",
    query: (_d, p) => `Consent?category=break-glass&patient=${p}`,
  },
  AuditQueried: {
    kind: "query",
    query: (d) => `AuditEvent${queryString({ query: d.query, ...filtersOf(d) })}`,
  },
  AuditExported: {
    kind: "query",
    query: (d) => `AuditEvent${queryString({ format: d.format, ...filtersOf(d) })}`,
  },
  // the transparency log: reads of checkpoints and proofs (no PHI), publications
  TransparencyLogRead: {
    kind: "query",
    query: (d) => `Binary${queryString({ query: d.query, ...tlogParams(d) })}`,
  },
  CheckpointPublished: {
    kind: "create",
    what: (d) => ({
      identifier: { system: `${CHARTLOG_SYSTEM}:checkpoint`, value: String(d.treeSize) },
    }),
  },
  CheckpointKeyAdopted: { kind: "create", what: ident("checkpoint-key", "keyId") },
  // creates
  PatientRegistered: { kind: "create", what: patient },
  MrnReserved: { kind: "create", what: ident("mrn-reservation", "patientId") },
  CareTeamMemberAdded: { kind: "create", what: ref("CareTeam", "patientId") },
  EncounterPlanned: { kind: "create", what: ref("Encounter", "encounterId") },
  MediaUploaded: { kind: "create", what: ref("Media", "mediaId") },
  UploadRejected: {
    kind: "create",
    what: ident("upload", "patientId"),
    failure: (d) => ({ desc: `upload rejected: ${d.reason}` }),
  },
  ProxyAdded: { kind: "create", what: ref("RelatedPerson", "proxyId") },
  AccessRequested: { kind: "create", what: ident("access-request", "requestId") },
  AccessCodeShared: { kind: "create", what: ident("access-share", "shareId") },
  AccessGranted: { kind: "create", what: ref("Consent", "grantId") },
  BreakGlassUsed: { kind: "create", what: ref("Consent", "grantId") },
  UserRegistered: { kind: "create", what: ident("user", "userId") },
  ClinicRegistered: { kind: "create", what: ref("Organization", "clinicId") },
  ClinicPractitionerAdded: { kind: "create", what: ref("PractitionerRole", "userId") },
  // the ownership (its user) is the entity: the clinic itself neither appears nor goes
  ClinicOwnerAdded: { kind: "create", what: ident("clinic-owner", "userId") },
  PractitionerProfileSet: { kind: "create", what: ref("Practitioner", "userId") },
  ChartEntryRecorded: { kind: "create", what: chartEntry },
  // updates
  ChartEntryAmended: { kind: "update", what: chartEntry },
  ChartEntryEnteredInError: { kind: "update", what: chartEntry },
  LabTestStatusChanged: { kind: "update", what: chartEntry },
  LabResultAcknowledged: { kind: "update", what: chartEntry },
  PatientUpdated: { kind: "update", what: patient },
  PatientRestored: { kind: "update", what: patient },
  EncounterStatusChanged: { kind: "update", what: ref("Encounter", "encounterId") },
  MediaRestored: { kind: "update", what: ref("Media", "mediaId") },
  AccessCodeVerified: { kind: "update", what: ident("access-request", "requestId") },
  AccessCodeRedeemed: { kind: "update", what: ident("access-share", "shareId") },
  AccessCodeExpired: {
    kind: "update",
    what: (d) => ident("access-request", "requestId")(d) ?? ident("access-share", "shareId")(d),
  },
  AccessCodeFailed: {
    kind: "update",
    what: ident("access-request", "requestId"),
    failure: failed("wrong or unusable access code"),
  },
  AccessCodeLocked: {
    kind: "update",
    what: ident("access-request", "requestId"),
    failure: failed("access code locked after too many attempts"),
  },
  AccessGrantRevoked: { kind: "update", what: ref("Consent", "grantId") },
  AccessGrantExpired: { kind: "update", what: ref("Consent", "grantId") },
  BreakGlassReviewed: { kind: "update", what: ident("break-glass", "breakGlassId") },
  ClinicUpdated: { kind: "update", what: ref("Organization", "clinicId") },
  ClinicDeactivated: { kind: "update", what: ref("Organization", "clinicId") },
  ClinicReactivated: { kind: "update", what: ref("Organization", "clinicId") },
  ClinicLicenseClaimed: { kind: "update", what: ref("Organization", "clinicId") },
  ClinicPractitionerUpdated: { kind: "update", what: ref("PractitionerRole", "userId") },
  PractitionerProfileUpdated: { kind: "update", what: ref("Practitioner", "userId") },
  PractitionerLicenseClaimed: { kind: "update", what: ref("Practitioner", "userId") },
  UserApproved: { kind: "update", what: ident("user", "userId") },
  UserRoleChanged: { kind: "update", what: ident("user", "userId") },
  UserDeactivated: { kind: "update", what: ident("user", "userId") },
  UserReactivated: { kind: "update", what: ident("user", "userId") },
  UserPasswordChanged: { kind: "update", what: ident("user", "userId") },
  UserPasswordReset: { kind: "update", what: ident("user", "userId") },
  UserProfileUpdated: { kind: "update", what: ident("user", "userId") },
  // deletes (erasure is the deletion of a subject's key)
  PatientDeleted: { kind: "delete", what: patient },
  MediaDeleted: { kind: "delete", what: ref("Media", "mediaId") },
  CareTeamMemberRemoved: { kind: "delete", what: ref("CareTeam", "patientId") },
  ClinicOwnerRemoved: { kind: "delete", what: ident("clinic-owner", "userId") },
  ProxyRemoved: { kind: "delete", what: ref("RelatedPerson", "proxyId") },
  SubjectKeyDestroyed: { kind: "delete", what: ident("subject-key", "subjectId") },
  // authentication
  UserLoggedIn: { kind: "login" },
  LoginSucceeded: { kind: "login" },
  SessionSecondFactorVerified: { kind: "login" },
  MfaVerified: { kind: "login" },
  SessionRefreshed: { kind: "login" },
  LoginFailed: { kind: "login", failure: (d) => ({ desc: `login failed: ${d.reason}` }) },
  SignupRefused: { kind: "login", failure: (d) => ({ desc: `signup refused: ${d.reason}` }) },
  AccountLocked: { kind: "login", failure: failed("account locked") },
  RefreshReuseDetected: {
    kind: "login",
    failure: () => ({ serious: true, desc: "refresh token reuse detected" }),
  },
  SessionEnded: { kind: "logout" },
  // security attributes of an account
  AccountUnlocked: { kind: "security", what: ident("user", "userId") },
  MfaEnrollmentStarted: { kind: "security", what: ident("user", "userId") },
  MfaEnabled: { kind: "security", what: ident("user", "userId") },
  MfaDisabled: { kind: "security", what: ident("user", "userId") },
  MfaReset: { kind: "security", what: ident("user", "userId") },
  // the policy's refusals
  AccessDenied: { kind: "denied" },
  // messages out
  NotificationDelivered: { kind: "export", what: ref("Communication", "notificationId") },
  NotificationFailed: {
    kind: "export",
    what: ref("Communication", "notificationId"),
    failure: failed("notification not delivered"),
  },
};

const OTHER: Rule = { kind: "activity" };

const tlogParams = (d: Data): Record<string, unknown> => {
  const out: Record<string, unknown> = {};
  for (const k of ["position", "treeSize", "from", "to"]) if (d[k] !== undefined) out[k] = d[k];
  return out;
};

const filtersOf = (d: Data): Record<string, unknown> =>
  d.filters && typeof d.filters === "object" ? d.filters as Record<string, unknown> : {};

const queryString = (f: Record<string, unknown>): string => {
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(f)) {
    if (Array.isArray(v)) { for (const x of v) p.append(k === "types" ? "type" : k, String(x)); }
    else if (typeof v === "string" || typeof v === "number" || typeof v === "boolean") {
      p.append(k, k === "cursor" ? "…" : String(v));
    }
  }
  const s = p.toString();
  return s ? `?${s}` : "";
};

/** The interaction a refused policy action stood for, by its verb. */
const deniedKind = (action: string): Exclude<Kind, "denied"> => {
  const verb = action.split(".")[1] ?? "";
  if (/^(read|history|read_as_of|stats|see_deleted)$/.test(verb)) return "read";
  if (/^(list|list_own|events|activity|requests_own)$/.test(verb)) return "query";
  if (/^(create|upload|upload_document|request|share|use)$/.test(verb)) return "create";
  if (/^(delete|erase)$/.test(verb)) return "delete";
  if (/^(update|restore|manage|manage_practitioners|revoke|review|redeem|verify)$/.test(verb)) {
    return "update";
  }
  return "activity";
};

const REST: Record<string, { action: string; code: string; profile: string }> = {
  read: { action: "R", code: "read", profile: "Read" },
  query: { action: "E", code: "search", profile: "Query" },
  create: { action: "C", code: "create", profile: "Create" },
  update: { action: "U", code: "update", profile: "Update" },
  delete: { action: "D", code: "delete", profile: "Delete" },
};

/**
 * v3-ActReason purpose of use, from what the log says of the access:
 * through a grant (a patient's consent, or break-glass), a care relation
 * (treatment), the patient or a proxy, operations staff, or the audit
 * surface itself (compliance).
 */
export const purposeOfUse = (
  e: StoredEvent,
  m: EventMetadata,
  grantSource: string | undefined,
): string | null => {
  if (e.type.startsWith("Audit") || m.actorRole === "auditor") return "HCOMPL";
  if (e.type === "BreakGlassUsed" || (m.grantId && grantSource === "break_glass")) return "ETREAT";
  if (m.grantId || m.onBehalfOf) return "PATRQT";
  switch (m.actorRole) {
    case "practitioner":
      return "TREAT";
    case "patient":
      return "PATRQT";
    case "admin":
    case "clinical_ops":
    case "reception":
    case "analyst":
      return "HOPERAT";
  }
  return null;
};

const PURPOSE_DISPLAY: Record<string, string> = {
  HCOMPL: "health compliance",
  ETREAT: "Emergency Treatment",
  PATRQT: "patient requested",
  TREAT: "treatment",
  HOPERAT: "healthcare operations",
};

/** Where the export runs: the server agent of every AuditEvent. */
export interface BalpContext {
  /** The server's address: an absolute URL (network type 5) or a host name (type 1). */
  server: string;
  /** Grant id → the grant's source (`request`, `share`, `break_glass`), when known. */
  grantSource(grantId: string): string | undefined;
  /** Only this patient's AuditEvents (an export filtered by patient). */
  patientId?: string;
}

/** A stable UUID for the n-th AuditEvent of an event (one per patient returned). */
const derivedId = (eventId: string, patientId: string): string => {
  const h = createHash("sha256").update(`${eventId}:${patientId}`).digest("hex");
  // RFC 9562 version 8 (custom), variant 10
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-8${h.slice(13, 16)}-${
    ((parseInt(h[16]!, 16) & 3) | 8).toString(16)
  }${h.slice(17, 20)}-${h.slice(20, 32)}`;
};

const isUrl = (s: string) => /^[a-z][a-z0-9+.-]*:\/\//i.test(s);

/** The patients an event is about: one AuditEvent is made for each (none: one without). */
const patientsOf = (
  e: StoredEvent,
  d: Data,
  ctx: BalpContext,
): { several: boolean; patients: (string | null)[] } => {
  let ids: string[] = [];
  if (Array.isArray(d.patientIds)) ids = d.patientIds.filter((x): x is string => !!str(x));
  else if (str(d.patientId)) ids = [d.patientId as string];
  else if (e.type === "AuditQueried" || e.type === "AuditExported") {
    const f = str((d.filters as Data | undefined)?.patientId);
    if (f) ids = [f];
  } else if (
    e.type === "AccessDenied" && str(d.resourceId) && String(d.action).startsWith("patient.")
  ) ids = [d.resourceId as string];
  else if (e.streamId.startsWith("patient-")) ids = [e.streamId.slice("patient-".length)];
  const all = [...new Set(ids)];
  // filtered by patient: that patient's AuditEvent only (its id as in a whole export)
  if (ctx.patientId && all.includes(ctx.patientId)) {
    return { several: all.length > 1, patients: [ctx.patientId] };
  }
  return { several: all.length > 1, patients: all.length ? all : [null] };
};

const J = JSON.stringify;
const PERSON = J({ system: ENTITY_TYPE, code: "1", display: "Person" });
const PATIENT_ROLE = J({ system: OBJECT_ROLE, code: "1", display: "Patient" });
const SYSTEM_OBJECT = J({ system: ENTITY_TYPE, code: "2", display: "System Object" });
const DOMAIN_RESOURCE = J({ system: OBJECT_ROLE, code: "4", display: "Domain Resource" });
const QUERY_ROLE = J({ system: OBJECT_ROLE, code: "24", display: "Query" });
const REQUEST_ID = J({ system: BALP_ENTITY, code: "XrequestId", display: "X-Request-Id" });
const SOURCE = J({
  site: "chartlog",
  observer: { display: "Chartlog" },
  type: [{ system: SOURCE_TYPE, code: "4", display: "Application Server" }],
});
const DESTINATION_ROLE = J({ coding: [dcm("110152", "Destination Role ID")] });
const SOURCE_ROLE = J({ coding: [dcm("110153", "Source Role ID")] });
const USER_TYPES: Record<string, string> = {
  IRCP: J({ coding: [{ system: PARTICIPATION, code: "IRCP", display: "information recipient" }] }),
  AUT: J({ coding: [{ system: PARTICIPATION, code: "AUT", display: "author (originator)" }] }),
};
const PURPOSES: Record<string, string> = Object.fromEntries(
  Object.entries(PURPOSE_DISPLAY).map((
    [code, display],
  ) => [code, J([{ coding: [{ system: ACT_REASON, code, display }] }])]),
);
const roleJson = new Map<string, string>();
const roleOf = (role: string): string => {
  let r = roleJson.get(role);
  if (r === undefined) {
    r = J([{ coding: [{ system: `${CHARTLOG_SYSTEM}:role`, code: role }] }]);
    if (roleJson.size < 100) roleJson.set(role, r);
  }
  return r;
};

/** What an event's kind (and vread) makes of type, subtype, action and profile: cached JSON. */
const heads = new Map<string, { head: string; profile: string | null }>();
const headOf = (kind: Kind, vread: boolean) => {
  const key = `${kind}|${vread}`;
  let h = heads.get(key);
  if (h) return h;
  const rest = REST[kind];
  let type: Coding;
  let subtype: Coding[] = [];
  let action: string;
  if (rest) {
    const code = kind === "read" && vread ? "vread" : rest.code;
    type = { system: EVENT_TYPE, code: "rest", display: "Restful Operation" };
    subtype = [{ system: INTERACTION, code, display: code }];
    action = rest.action;
  } else if (kind === "login" || kind === "logout") {
    type = dcm("110114", "User Authentication");
    subtype = [kind === "login" ? dcm("110122", "Login") : dcm("110123", "Logout")];
    action = "E";
  } else if (kind === "security") {
    type = dcm("110113", "Security Alert");
    subtype = [dcm("110137", "User Security Attributes Changed")];
    action = "U";
  } else if (kind === "export") {
    type = dcm("110106", "Export");
    action = "R";
  } else {
    type = dcm("110100", "Application Activity");
    action = "E";
  }
  h = {
    head: `"type":${J(type)},${
      subtype.length ? `"subtype":${J(subtype)},` : ""
    }"action":"${action}"`,
    profile: rest?.profile ?? null,
  };
  heads.set(key, h);
  return h;
};

/**
 * The AuditEvent resources of one stored event (one per patient it names; at
 * least one), as JSON text: the export writes these without building the
 * resources as objects (constant parts are serialised once).
 */
export const auditEventsJson = (
  e: StoredEvent,
  ctx: BalpContext,
): { id: string; json: string }[] => {
  const d = (e.data && typeof e.data === "object" ? e.data : {}) as Data;
  const m = (e.metadata && typeof e.metadata === "object" ? e.metadata : {}) as EventMetadata;
  const rule = RULES[e.type] ?? OTHER;
  const denied = rule.kind === "denied";
  const kind = denied ? deniedKind(String(d.action ?? "")) : rule.kind;
  const failure = denied
    ? { serious: false, desc: `denied: ${String(d.action ?? "")}`.slice(0, 200) }
    : rule.failure?.(d) ?? null;
  const { several, patients } = patientsOf(e, d, ctx);
  const purpose = purposeOfUse(e, m, m.grantId ? ctx.grantSource(m.grantId) : undefined);
  const actorId = m.actorId ?? (kind === "login" || kind === "logout" ? str(d.userId) : null);
  const { head, profile } = headOf(kind, kind === "read" && !!rule.vread?.(d));

  // agents: for a read the client receives the data (DCM 110152 Destination Role
  // ID) and the server sends it (110153 Source Role ID); queries and writes are
  // the reverse, as BALP has them. Then the user.
  const clientIsDestination = kind === "read";
  const client = `{"type":${
    clientIsDestination ? DESTINATION_ROLE : SOURCE_ROLE
  },"who":{"display":${J(m.userAgent ?? "unknown client")}},"requestor":false${
    m.ip ? `,"network":{"address":${J(m.ip)},"type":"2"}` : ""
  }}`;
  const server = `{"type":${clientIsDestination ? SOURCE_ROLE : DESTINATION_ROLE},` +
    `"who":{"display":"Chartlog"},"requestor":${!actorId},"network":{"address":${
      J(ctx.server)
    },"type":"${isUrl(ctx.server) ? "5" : "1"}"}}`;
  const userType = kind === "read" || kind === "query"
    ? USER_TYPES.IRCP
    : kind === "create" || kind === "update" || kind === "delete"
    ? USER_TYPES.AUT
    : null;
  const user = actorId
    ? `,{${userType ? `"type":${userType},` : ""}${
      m.actorRole ? `"role":${roleOf(m.actorRole)},` : ""
    }"who":{"identifier":{"system":"${CHARTLOG_SYSTEM}:user","value":${
      J(actorId)
    }}},"requestor":true${purpose ? `,"purposeOfUse":${PURPOSES[purpose]}` : ""}}`
    : "";
  const agents = `"agent":[${client},${server}${user}]`;
  const tail = `"source":${SOURCE}`;
  const transaction = m.requestId
    ? `{"what":{"identifier":{"value":${J(m.requestId)}}},"type":${REQUEST_ID}}`
    : null;
  const what = rule.what?.(d) ??
    (denied && str(d.resourceId)
      ? { identifier: { system: `${CHARTLOG_SYSTEM}:resource`, value: String(d.resourceId) } }
      : null);
  const whatEntity = kind === "query" || !what
    ? null
    : `{"what":${J(what)},"type":${SYSTEM_OBJECT},"role":${DOMAIN_RESOURCE}}`;
  const outcome = failure
    ? `"outcome":"${failure.serious ? "8" : "4"}","outcomeDesc":${J(failure.desc)}`
    : `"outcome":"0"`;

  return patients.map((patientId) => {
    const entity: string[] = [];
    if (patientId) {
      entity.push(
        `{"what":{"reference":${
          J(`Patient/${patientId}`)
        }},"type":${PERSON},"role":${PATIENT_ROLE}}`,
      );
    }
    if (kind === "query") {
      const q = (rule.query ?? (() => `${e.type}`))(d, patientId);
      entity.push(
        `{"type":${SYSTEM_OBJECT},"role":${QUERY_ROLE},"description":${
          J(`${q.split("?")[0]} search`)
        },"query":"${btoa(String.fromCharCode(...new TextEncoder().encode(q)))}"}`,
      );
    } else if (whatEntity) entity.push(whatEntity);
    if (transaction) entity.push(transaction);
    const id = several && patientId ? derivedId(e.eventId, patientId) : e.eventId;
    const meta = profile && !failure
      ? `"meta":{"profile":["${PROFILE}${patientId ? `Patient${profile}` : profile}"]},`
      : "";
    return {
      id,
      json: `{"resourceType":"AuditEvent","id":${J(id)},${meta}${head},"recorded":${
        J(e.recordedAt)
      },${outcome},${agents},${tail}${entity.length ? `,"entity":[${entity.join(",")}]` : ""}}`,
    };
  });
};

/** The AuditEvent resources of one stored event, as objects. */
export const toAuditEvents = (e: StoredEvent, ctx: BalpContext): AuditEventResource[] =>
  auditEventsJson(e, ctx).map((r) => JSON.parse(r.json));
