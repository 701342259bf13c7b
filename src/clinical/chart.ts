import { z } from "zod";
import type { ChartKindName } from "../../events/chart.ts";
import type { EventMetadata } from "../../events/metadata.ts";
import type { Actor } from "../auth/policy.ts";
import { handleCommand } from "../domain/command_handler.ts";
import { applyChanges, type Author, chartDecider, fold, type LabStatus } from "../domain/chart.ts";
import { type FieldIssue, NotFoundError, ValidationError } from "../errors.ts";
import { fieldIssues } from "../http/validation.ts";
import type { EventStore } from "../store/event_store.ts";
import { type Query, sql } from "../store/sql.ts";
import type { StoredEvent } from "../store/types.ts";
import { timestamp } from "../timestamp.ts";
import { type ChartKind, type Content, KINDS } from "./chart_kinds.ts";
import { readTogether } from "../store/snapshot.ts";

export const chartStream = (entryId: string) => `chart-${entryId}`;

/** An entry as the API answers it: the envelope, then the kind's fields. */
export interface ChartEntryView {
  id: string;
  patientId: string;
  kind: ChartKindName;
  encounterId: string | null;
  clinicId: string | null;
  patientEntered: boolean;
  createdBy: Author;
  enteredInError: boolean;
  createdAt: string;
  updatedAt: string;
  version: number;
  /** Lab tests: the ordering practitioner's acknowledgement of the current result. */
  acknowledgement?: { by: Author; at: string } | null;
  [field: string]: unknown;
}

const isUuid = (v: unknown): v is string => z.uuid().safeParse(v).success;

const bad = (issues: FieldIssue[]): never => {
  throw new ValidationError("the chart entry is not valid", issues);
};

/** The kind's field issues of `content`, the cross-field and clock rules included. */
const contentIssues = (kind: ChartKind, content: unknown, today: string, prefix = "") => {
  const r = kind.fields.safeParse(content);
  // the cross-field rules run on bad input too (on the fields not already named), so
  // that one 422 names every bad field
  const flagged = r.success ? [] : fieldIssues(r.error.issues);
  const raw = typeof content === "object" && content !== null ? content as Content : {};
  const issues = [
    ...flagged,
    ...kind.check(r.success ? r.data : raw, today).filter((i) =>
      !flagged.some((f) => f.path === i.path)
    ),
  ];
  return {
    content: r.success ? r.data as Content : null,
    issues: issues.map((i) => ({ ...i, path: prefix + i.path })),
  };
};

/** Named practitioners must be practitioner users (a 422 naming the field otherwise). */
const practitionerIssues = async (
  store: EventStore,
  kind: ChartKind,
  content: Content,
  prefix = "",
): Promise<FieldIssue[]> => {
  const issues: FieldIssue[] = [];
  for (const f of kind.practitionerFields) {
    const id = content[f];
    if (!isUuid(id)) continue;
    const [u] = await store.db.query<{ role: string }>(
      sql`select role from users where id = ${id}::uuid`,
    );
    if (u?.role !== "practitioner") {
      issues.push({ path: prefix + f, message: "no such practitioner" });
    }
  }
  return issues;
};

/** Named media must be this patient's and not deleted (a 422 naming the field otherwise). */
const mediaIssues = async (
  store: EventStore,
  kind: ChartKind,
  content: Content,
  patientId: string,
  prefix = "",
): Promise<FieldIssue[]> => {
  const issues: FieldIssue[] = [];
  for (const f of kind.mediaFields) {
    const id = content[f];
    if (!isUuid(id)) continue;
    const [m] = await store.db.query<{ p: string }>(sql`select patient_id::text as p from media
      where id = ${id}::uuid and not deleted`);
    if (m?.p !== patientId) {
      issues.push({ path: prefix + f, message: "no such media of this patient" });
    }
  }
  return issues;
};

/**
 * The clinic of a professional's entry: the one given, which must be an
 * active clinic where the author is an active member, else their only active
 * membership, else none (a practitioner of no clinic).
 */
const clinicOf = async (
  store: EventStore,
  authorId: string,
  given: string | null | undefined,
): Promise<{ clinicId: string | null; issue?: FieldIssue }> => {
  const rows = await store.db.query<{ id: string }>(sql`select m.clinic_id::text as id
    from clinic_practitioners m join clinics c on c.id = m.clinic_id
    where m.user_id = ${authorId}::uuid and m.active and c.active order by m.clinic_id`);
  if (given) {
    return rows.some((r) => r.id === given) ? { clinicId: given } : {
      clinicId: null,
      issue: { path: "clinicId", message: "not a clinic where you are an active member" },
    };
  }
  if (rows.length > 1) {
    return {
      clinicId: null,
      issue: { path: "clinicId", message: "required: you are a member of several clinics" },
    };
  }
  return { clinicId: rows[0]?.id ?? null };
};

const Envelope = z.object({
  clinicId: z.uuid().nullable().optional(),
  encounterId: z.uuid().nullable().optional(),
});

/**
 * Records a new entry. Patients and proxies' entries are patient-entered and
 * carry no clinic. Every bad field (content, clinic, encounter, named
 * practitioners) is named in one 422.
 */
export const recordEntry = async (
  store: EventStore,
  input: {
    patientId: string;
    kind: ChartKindName;
    actor: Actor;
    body: Record<string, unknown>;
    today: string;
  },
  metadata: EventMetadata,
): Promise<ChartEntryView> => {
  const [p] = await store.db.query<{ deleted: boolean }>(
    sql`select deleted from patients where id = ${input.patientId}::uuid`,
  );
  if (!p) throw new NotFoundError("no such patient");
  const kind = KINDS[input.kind];
  const { clinicId: givenClinic, encounterId: givenEncounter, ...given } = input.body;
  const rest = kind.defaults
    ? kind.defaults(given, { id: input.actor.userId, role: input.actor.role })
    : given;
  const env = Envelope.safeParse({ clinicId: givenClinic, encounterId: givenEncounter });
  const issues: FieldIssue[] = env.success ? [] : fieldIssues(env.error.issues);
  const { content, issues: contentBad } = contentIssues(kind, rest, input.today);
  issues.push(...contentBad);
  for (const i of kind.createCheck?.(rest) ?? []) {
    if (!issues.some((f) => f.path === i.path)) issues.push(i);
  }
  // on the ids given, even when other fields are bad (a malformed id is named already)
  issues.push(...await practitionerIssues(store, kind, rest));
  issues.push(...await mediaIssues(store, kind, rest, input.patientId));
  const patientEntered = input.actor.role === "patient";
  let clinicId: string | null = null;
  let encounterId: string | null = null;
  if (env.success) {
    if (patientEntered) {
      if (env.data.clinicId) {
        issues.push({ path: "clinicId", message: "a patient-entered entry names no clinic" });
      }
    } else {
      const c = await clinicOf(store, input.actor.userId, env.data.clinicId);
      if (c.issue) issues.push(c.issue);
      clinicId = c.clinicId;
    }
    if (env.data.encounterId) {
      const [e] = await store.db.query<{ p: string }>(
        sql`select patient_id::text as p from encounters where id = ${env.data.encounterId}::uuid`,
      );
      if (e?.p !== input.patientId) {
        issues.push({ path: "encounterId", message: "no such encounter of this patient" });
      } else encounterId = env.data.encounterId;
    }
  }
  if (issues.length > 0 || !content) bad(issues);
  const entryId = crypto.randomUUID();
  await handleCommand(store, chartDecider, chartStream(entryId), {
    type: "RecordEntry",
    entryId,
    patientId: input.patientId,
    kind: input.kind,
    encounterId,
    clinicId,
    patientEntered,
    createdBy: { id: input.actor.userId, role: input.actor.role },
    content: content!,
  }, { metadata });
  return (await loadEntry(store, input.patientId, input.kind, entryId))!;
};

/** The entry's events, when it is this patient's entry of this kind (else 404). */
const entryEvents = async (
  store: EventStore,
  patientId: string,
  kind: ChartKindName,
  entryId: string,
): Promise<StoredEvent[]> => {
  const events = await store.readStream(chartStream(entryId));
  const s = fold(events);
  if (s.status === "none" || s.patientId !== patientId || s.kind !== kind) {
    throw new NotFoundError("no such chart entry");
  }
  return events;
};

const view = (events: readonly StoredEvent[]): ChartEntryView | null => {
  const s = fold(events);
  if (s.status === "none") return null;
  const ackAt = events.findLast((e) => e.type === "LabResultAcknowledged")?.recordedAt;
  return {
    id: s.entryId,
    patientId: s.patientId,
    kind: s.kind,
    encounterId: s.encounterId,
    clinicId: s.clinicId,
    patientEntered: s.patientEntered,
    createdBy: s.createdBy,
    enteredInError: s.status === "entered_in_error",
    ...s.content,
    ...(s.kind === "lab-tests"
      ? {
        acknowledgement: s.acknowledgedBy && ackAt
          ? { by: s.acknowledgedBy, at: timestamp(ackAt) }
          : null,
      }
      : {}),
    createdAt: timestamp(events[0]!.recordedAt),
    updatedAt: timestamp(events.at(-1)!.recordedAt),
    version: events.at(-1)!.streamVersion,
  };
};

/** One entry of the patient's, of this kind, or null. */
export const loadEntry = async (
  store: EventStore,
  patientId: string,
  kind: ChartKindName,
  entryId: string,
): Promise<ChartEntryView | null> => {
  try {
    return view(await entryEvents(store, patientId, kind, entryId));
  } catch (err) {
    if (err instanceof NotFoundError) return null;
    throw err;
  }
};

/**
 * Whether the entry lies in the part of the chart the actor sees (the
 * policy's chartEntryScope; null: the whole chart). Asked before a single
 * read or a history, which answer 404 when it does not.
 */
export const entryInScope = async (
  store: EventStore,
  entryId: string,
  only: Query | null,
): Promise<boolean> => {
  if (!only) return true;
  const [r] = await store.db.query<{ ok: boolean }>(
    sql`select true as ok from chart_entries where id = ${entryId}::uuid and ${only}`,
  );
  return r?.ok === true;
};
/** What each of an entry's events did, as its history names it. */
export const CHANGES: Readonly<Record<string, ChangeName>> = {
  ChartEntryRecorded: "recorded",
  ChartEntryAmended: "amended",
  ChartEntryEnteredInError: "entered_in_error",
  LabTestStatusChanged: "status_changed",
  LabResultAcknowledged: "acknowledged",
};
export const CHANGE_NAMES = [
  "recorded",
  "amended",
  "entered_in_error",
  "status_changed",
  "acknowledged",
] as const;
export type ChangeName = (typeof CHANGE_NAMES)[number];

/** Every version of an entry, oldest first: what it said, who made it, when and why. */
export const entryHistory = async (
  store: EventStore,
  patientId: string,
  kind: ChartKindName,
  entryId: string,
) => {
  const events = await entryEvents(store, patientId, kind, entryId);
  let content: Content | null = null;
  let enteredInError = false;
  return events.map((e) => {
    const d = e.data as Record<string, unknown>;
    let by: Author;
    let reason: string | null = null;
    let changes: Content | null = null;
    if (e.type === "ChartEntryRecorded") {
      content = (d.content ?? null) as Content | null;
      by = d.createdBy as Author;
    } else if (e.type === "ChartEntryAmended") {
      changes = (d.changes ?? null) as Content | null;
      content = applyChanges(content, changes);
      by = d.amendedBy as Author;
      reason = (d.reason ?? null) as string | null;
    } else if (e.type === "LabTestStatusChanged") {
      changes = (d.changes ?? null) as Content | null;
      content = applyChanges(content, changes);
      by = d.changedBy as Author;
    } else if (e.type === "LabResultAcknowledged") {
      by = d.acknowledgedBy as Author;
    } else {
      enteredInError = true;
      by = d.amendedBy as Author;
      reason = (d.reason ?? null) as string | null;
    }
    return {
      version: e.streamVersion,
      change: CHANGES[e.type] ?? "entered_in_error",
      at: timestamp(e.recordedAt),
      by,
      reason,
      changes,
      enteredInError,
      content,
    };
  });
};

/** The entry's facts the policy needs before an amendment (404 when not this patient's). */
export const entryFacts = async (
  store: EventStore,
  patientId: string,
  kind: ChartKindName,
  entryId: string,
) => {
  const s = fold(await entryEvents(store, patientId, kind, entryId));
  return s.status === "none" ? null : s;
};

/**
 * A new version: `changes` replace fields (null clears an optional one); the
 * content after them must pass the kind's rules, on the state it is decided
 * on. If-Match honoured (412 when stale); without it a concurrent amendment
 * is read and the rules asked again.
 */
export const amendEntry = async (
  store: EventStore,
  input: {
    patientId: string;
    kind: ChartKindName;
    entryId: string;
    by: Author;
    reason: string;
    changes: Record<string, unknown>;
    today: string;
  },
  metadata: EventMetadata,
  ifMatch?: number,
): Promise<ChartEntryView> => {
  const kind = KINDS[input.kind];
  const s = await entryFacts(store, input.patientId, input.kind, input.entryId);
  const partial = kind.fields.partial().safeParse(
    Object.fromEntries(
      Object.entries(input.changes).map(([k, v]) => [k, v === null ? undefined : v]),
    ),
  );
  const issues: FieldIssue[] = partial.success
    ? []
    : fieldIssues(partial.error.issues).map((i) => ({ ...i, path: `changes.${i.path}` }));
  for (const k of kind.fixed ?? []) {
    if (k in input.changes) {
      issues.push({
        path: `changes.${k}`,
        message: "cannot be amended: it has a route of its own",
      });
    }
  }
  // a required field cannot be cleared
  for (const [k, v] of Object.entries(input.changes)) {
    const field = kind.fields.shape[k];
    if (v === null && field && !field.safeParse(undefined).success) {
      issues.push({ path: `changes.${k}`, message: "required: cannot be cleared" });
    }
  }
  if (issues.length === 0 && s?.content) {
    const merged = applyChanges(s.content, input.changes);
    const r = contentIssues(kind, merged, input.today, "changes.");
    issues.push(...r.issues);
    if (partial.success) {
      issues.push(...await practitionerIssues(store, kind, partial.data, "changes."));
      issues.push(...await mediaIssues(store, kind, partial.data, input.patientId, "changes."));
    }
  }
  if (issues.length > 0) bad(issues);
  await handleCommand(store, chartDecider, chartStream(input.entryId), {
    type: "AmendEntry",
    by: input.by,
    reason: input.reason,
    changes: input.changes,
    validate: (merged) => contentIssues(kind, merged, input.today, "changes.").issues,
  }, { metadata, ...(ifMatch !== undefined ? { ifMatch } : { retry: true }) });
  return (await loadEntry(store, input.patientId, input.kind, input.entryId))!;
};

/** Marks an entry entered-in-error (idempotent). If-Match honoured. */
export const markEnteredInError = async (
  store: EventStore,
  input: { patientId: string; kind: ChartKindName; entryId: string; by: Author; reason: string },
  metadata: EventMetadata,
  ifMatch?: number,
): Promise<ChartEntryView> => {
  await entryFacts(store, input.patientId, input.kind, input.entryId);
  await handleCommand(store, chartDecider, chartStream(input.entryId), {
    type: "MarkEnteredInError",
    by: input.by,
    reason: input.reason,
  }, { metadata, ...(ifMatch !== undefined ? { ifMatch } : { retry: true }) });
  return (await loadEntry(store, input.patientId, input.kind, input.entryId))!;
};

/**
 * Moves a lab test along its status machine (409 `illegal-transition`
 * otherwise), with any result given; the content after the move must pass
 * the kind's rules. If-Match honoured (412 when stale); without it the move
 * is decided again on a concurrent version.
 */
export const changeLabStatus = async (
  store: EventStore,
  input: {
    patientId: string;
    entryId: string;
    by: Author;
    status: LabStatus;
    results: Record<string, unknown>;
    today: string;
  },
  metadata: EventMetadata,
  ifMatch?: number,
): Promise<ChartEntryView> => {
  const kind = KINDS["lab-tests"];
  await entryFacts(store, input.patientId, "lab-tests", input.entryId);
  if (input.results.results !== undefined || input.results.resultText !== undefined) {
    const partial = kind.fields.pick({ resultText: true, results: true }).safeParse(
      input.results,
    );
    if (!partial.success) bad(fieldIssues(partial.error.issues));
  }
  await handleCommand(store, chartDecider, chartStream(input.entryId), {
    type: "ChangeLabStatus",
    by: input.by,
    status: input.status,
    results: input.results,
    validate: (merged) => contentIssues(kind, merged, input.today).issues,
  }, { metadata, ...(ifMatch !== undefined ? { ifMatch } : { retry: true }) });
  return (await loadEntry(store, input.patientId, "lab-tests", input.entryId))!;
};

/**
 * The ordering practitioner saw a completed test's result (409 before it is
 * completed, 403 for anyone else). Idempotent: a second acknowledgement of
 * the same result appends nothing; a result amended since is unseen again.
 */
export const acknowledgeResult = async (
  store: EventStore,
  input: { patientId: string; entryId: string; by: Author },
  metadata: EventMetadata,
): Promise<ChartEntryView> => {
  await entryFacts(store, input.patientId, "lab-tests", input.entryId);
  await handleCommand(store, chartDecider, chartStream(input.entryId), {
    type: "AcknowledgeResult",
    by: input.by,
  }, { metadata, retry: true });
  return (await loadEntry(store, input.patientId, "lab-tests", input.entryId))!;
};

export interface ChartListQuery {
  from?: string;
  to?: string;
  patientEntered?: boolean;
  includeEnteredInError?: boolean;
  limit: number;
  cursor?: string;
  /** The kind's own parameters (see ChartKind.query). */
  extra: Record<string, string | undefined>;
}

/** A chart list's cursor: the last row's clinical date and id (newest first). */
const Position = z.object({ d: z.iso.date(), id: z.uuid() });

interface Row {
  id: string;
  patient_id: string;
  kind: ChartKindName;
  encounter_id: string | null;
  clinic_id: string | null;
  patient_entered: boolean;
  created_by: string;
  created_by_role: string;
  content: Content | string | null;
  clinical_date: string;
  entered_in_error: boolean;
  version: number;
  created_at: Date;
  updated_at: Date;
  acknowledged_by: string | null;
  acknowledged_by_role: string | null;
  acknowledged_at: Date | null;
}

const rowView = (r: Row): ChartEntryView => ({
  id: r.id,
  patientId: r.patient_id,
  kind: r.kind,
  encounterId: r.encounter_id,
  clinicId: r.clinic_id,
  patientEntered: r.patient_entered,
  createdBy: { id: r.created_by, role: r.created_by_role },
  enteredInError: r.entered_in_error,
  ...(typeof r.content === "string" ? JSON.parse(r.content) : r.content),
  ...(r.kind === "lab-tests"
    ? {
      acknowledgement: r.acknowledged_by && r.acknowledged_at
        ? {
          by: { id: r.acknowledged_by, role: r.acknowledged_by_role ?? "" },
          at: timestamp(r.acknowledged_at),
        }
        : null,
    }
    : {}),
  createdAt: timestamp(r.created_at),
  updatedAt: timestamp(r.updated_at),
  version: r.version,
});

/**
 * One page of a patient's (or an encounter's) entries of a kind, newest
 * clinical date first, with the total of the filtered list.
 */
export const listEntries = async (
  store: EventStore,
  scope: { patientId: string } | { encounterId: string },
  kindName: ChartKindName,
  q: ChartListQuery,
  today: string,
  /** The policy's chartEntryScope: the part of the chart this actor sees (null: all of it). */
  only: Query | null = null,
): Promise<{ items: ChartEntryView[]; nextCursor: string | null; total: number }> => {
  const kind = KINDS[kindName];
  const filters: Query[] = [
    "patientId" in scope
      ? sql`where patient_id = ${scope.patientId}::uuid`
      : sql`where encounter_id = ${scope.encounterId}::uuid`,
    sql`and kind = ${kindName}`,
  ];
  if (!q.includeEnteredInError) filters.push(sql`and not entered_in_error`);
  if (q.patientEntered !== undefined) filters.push(sql`and patient_entered = ${q.patientEntered}`);
  if (q.from) filters.push(sql`and clinical_date >= ${q.from}::date`);
  if (q.to) filters.push(sql`and clinical_date <= ${q.to}::date`);
  filters.push(...kind.where(q.extra, today));
  if (only) filters.push(sql`and ${only}`);
  const where = filters.reduce((a, f) => sql`${a} ${f}`, sql``);
  const scopeName = `chart:${kindName}`;
  let after = sql``;
  if (q.cursor) {
    const c = await store.codec.cursors.decode(scopeName, Position, q.cursor);
    after = sql`and (clinical_date, id) < (${c.d}::date, ${c.id}::uuid)`;
  }
  const [rows, [count]] = await readTogether<Row, { n: number }>(
    store.db,
    sql`select id::text, patient_id::text, kind,
      encounter_id::text, clinic_id::text, patient_entered, created_by::text, created_by_role,
      content, to_char(clinical_date, 'YYYY-MM-DD') as clinical_date, entered_in_error, version,
      created_at, updated_at, acknowledged_by::text, acknowledged_by_role, acknowledged_at
    from chart_entries ${where} ${after}
    order by clinical_date desc, id desc limit ${q.limit + 1}`,
    sql`select count(*)::int as n from chart_entries ${where}`,
  );
  const page = rows.slice(0, q.limit);
  const last = page.at(-1);
  return {
    items: page.map(rowView),
    nextCursor: rows.length > q.limit && last
      ? await store.codec.cursors.encode(scopeName, { d: last.clinical_date, id: last.id })
      : null,
    total: Number(count?.n ?? 0),
  };
};
