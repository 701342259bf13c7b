import type { EventStore } from "../store/event_store.ts";
import { COLUMNS, decode, type EventRow } from "../store/read.ts";
import { int, sql } from "../store/sql.ts";
import type { StoredEvent } from "../store/types.ts";
import { actorNames, namesPatient } from "./disclosures.ts";

/**
 * A patient record's timeline for `deno task audit replay`: every event
 * that names the patient (see {@link namesPatient}: the record's stream,
 * reads, list reads, grants, break-glass, denials, audit uses), oldest
 * first, one readable line each, with the PHI the master key can still
 * unseal ("[erased]" where the patient's key was destroyed). Access codes
 * and password hashes are never printed.
 */
export interface ReplayWindow {
  patientId: string;
  from?: Date;
  to?: Date;
  /** Up to this global position (the head when the replay began: not its own audit event). */
  upTo?: number;
}

const BATCH = 500;

const filter = (w: ReplayWindow) =>
  sql`${namesPatient(w.patientId)}
    ${w.from ? sql`and e.recorded_at >= ${w.from}` : sql``}
    ${w.to ? sql`and e.recorded_at < ${w.to}` : sql``}
    ${w.upTo !== undefined ? sql`and e.global_position <= ${w.upTo}` : sql``}`;

/** How many events the timeline holds (recorded in the audit event before anything is shown). */
export const countTimeline = async (store: EventStore, w: ReplayWindow): Promise<number> => {
  const [r] = await store.db.query<{ n: number }>(
    sql`select count(*)::int as n from events e where ${filter(w)}`,
  );
  return Number(r?.n ?? 0);
};

/** The timeline's events, unsealed, in batches by global position (constant memory). */
export async function* timeline(store: EventStore, w: ReplayWindow): AsyncGenerator<StoredEvent> {
  let after = 0;
  for (;;) {
    const rows = await store.db.query<EventRow>(sql`select ${COLUMNS} from events e
      where ${filter(w)} and e.global_position > ${after}
      order by e.global_position limit ${int(BATCH)}`);
    for (const e of await decode(store, rows, true)) yield e;
    if (rows.length < BATCH) return;
    after = Number(rows.at(-1)!.global_position);
  }
}

/** The grants that break-glass opened on this patient (from the log: erasure keeps them). */
export const breakGlassGrants = async (store: EventStore, patientId: string) =>
  new Set(
    (await store.db.query<{ g: string }>(sql`select data->>'grantId' as g from events
      where type = 'BreakGlassUsed' and data->>'patientId' = ${patientId}`)).map((r) => r.g),
  );

/** Formats timeline lines; caches the names of the users it meets. */
export class TimelineFormatter {
  readonly #store: EventStore;
  readonly #breakGlass: Set<string>;
  readonly #names = new Map<string, { name: string | null; role: string; erased: boolean }>();

  constructor(store: EventStore, breakGlass: Set<string>) {
    this.#store = store;
    this.#breakGlass = breakGlass;
  }

  async #user(id: unknown): Promise<string> {
    if (typeof id !== "string") return "?";
    if (!this.#names.has(id)) {
      const found = await actorNames(this.#store, [id]);
      this.#names.set(id, found.get(id) ?? { name: null, role: "", erased: false });
    }
    const u = this.#names.get(id)!;
    return u.erased ? "[erased]" : u.name ?? id;
  }

  /** One line: time, type, actor (role), summary, and what the access went through. */
  async line(e: StoredEvent): Promise<string> {
    const m = e.metadata ?? {};
    const actor = m.actorId
      ? `${await this.#user(m.actorId)} (${m.actorRole ?? this.#names.get(m.actorId)?.role ?? "?"})`
      : "system";
    const via: string[] = [];
    if (e.type === "BreakGlassUsed" || (m.grantId && this.#breakGlass.has(m.grantId))) {
      via.push("break-glass");
    }
    if (m.grantId) via.push(`grant ${m.grantId}`);
    if (m.onBehalfOf) via.push(`on behalf of ${m.onBehalfOf}`);
    const summary = await this.#summary(e);
    return [
      e.recordedAt.toISOString(),
      e.type.padEnd(24),
      actor,
      summary ? `— ${summary}` : "",
      via.length ? `[${via.join("; ")}]` : "",
    ].filter(Boolean).join("  ");
  }

  async #summary(e: StoredEvent): Promise<string> {
    const d = e.data as Record<string, unknown>;
    const f = (k: string): string => {
      if (e.erasedFields.includes(k)) return "[erased]";
      const v = d[k];
      if (v === null || v === undefined) return "-";
      return typeof v === "string" ? v : JSON.stringify(v);
    };
    const n = (k: string) => (Array.isArray(d[k]) ? (d[k] as unknown[]).length : 0);
    switch (e.type) {
      case "PatientRegistered":
        return `registered ${f("firstName")} ${f("lastName")}, born ${f("dateOfBirth")}, MRN ${
          f("mrn")
        }`;
      case "PatientUpdated":
        return e.erasedFields.includes("changes")
          ? "changed [erased]"
          : `changed ${
            Object.entries((d.changes ?? {}) as Record<string, unknown>)
              .map(([k, v]) => `${k}=${typeof v === "string" ? v : JSON.stringify(v)}`).join(", ")
          }`;
      case "PatientDeleted":
        return `deleted: ${f("reason")}`;
      case "PatientRestored":
        return "restored";
      case "MrnReserved":
        return "MRN claimed";
      case "PatientViewed":
        return d.asOf ? `record viewed as of ${f("asOf")}` : "record viewed";
      case "PatientsSearched":
        return `patient list (${n("patientIds")} patients)`;
      case "PatientHistoryViewed":
        return "record history viewed";
      case "CareTeamMemberAdded":
        return `care team: added ${await this.#user(d.practitionerId)}`;
      case "CareTeamMemberRemoved":
        return `care team: removed ${await this.#user(d.practitionerId)}`;
      case "CareTeamViewed":
        return "care team viewed";
      case "EncounterPlanned":
        return `encounter ${f("encounterId")} planned for ${f("startsAt")} with ${await this.#user(
          d.practitionerId,
        )}: ${f("reason")}`;
      case "EncounterStatusChanged":
        return `encounter ${f("encounterId")} ${f("from")} → ${f("to")}`;
      case "EncounterViewed":
        return `encounter ${f("encounterId")} viewed`;
      case "EncountersListed":
        return `encounter list (${n("encounterIds")})`;
      case "MediaUploaded":
        return `${f("kind")} ${f("mediaId")} uploaded: ${f("filename")} (${f("contentType")}, ${
          f("size")
        } bytes)${d.notes ? `, notes: ${f("notes")}` : ""}`;
      case "UploadRejected":
        return `upload refused: ${f("reason")}`;
      case "MediaDeleted":
        return `media ${f("mediaId")} deleted: ${f("reason")}`;
      case "MediaRestored":
        return `media ${f("mediaId")} restored`;
      case "MediaViewed":
        return `media ${f("mediaId")} details viewed`;
      case "MediaDownloaded":
        return `media ${f("mediaId")} downloaded`;
      case "MediaThumbnailViewed":
        return `media ${f("mediaId")} thumbnail viewed`;
      case "MediaListed":
        return `media list (${n("mediaIds")})`;
      case "ProxyAdded":
        return `proxy ${await this.#user(d.userId)} added (${f("level")})`;
      case "ProxyRemoved":
        return `proxy ${await this.#user(d.userId)} removed`;
      case "ProxiesViewed":
        return "proxy list viewed";
      case "AccessRequested":
        return `access requested: ${f("purpose")}`;
      case "AccessCodeShared":
        return `code shared: ${f("purpose")}`;
      case "AccessCodeVerified":
      case "AccessCodeRedeemed":
        return "code accepted";
      case "AccessCodeFailed":
        return "wrong code";
      case "AccessCodeLocked":
        return "code attempts locked";
      case "AccessCodeExpired":
        return "code expired";
      case "AccessGranted": {
        const to = d.granteeKind === "practitioner"
          ? await this.#user(d.granteeId)
          : f("granteeId");
        return `grant ${f("grantId")} (${f("source")}) to ${f("granteeKind")} ${to} until ${
          f("expiresAt")
        }: ${f("purpose")}`;
      }
      case "AccessGrantRevoked":
        return `grant ${f("grantId")} revoked`;
      case "AccessGrantExpired":
        return `grant ${f("grantId")} expired`;
      case "BreakGlassUsed":
        return `break-glass: ${f("reason")}`;
      case "BreakGlassReviewed":
        return `break-glass reviewed (${f("outcome")}): ${f("note")}`;
      case "GrantsViewed":
        return "grants viewed";
      case "BreakGlassViewed":
        return "break-glass uses viewed";
      case "AccessDenied":
        return `DENIED ${f("action")}`;
      case "AuditQueried":
        return `audit query (${f("query")})`;
      case "AuditStreamViewed":
        return `record viewed as of ${f("asOf")} (audit)`;
      default:
        return "";
    }
  }
}
