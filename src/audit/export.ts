import type { EventMetadata } from "../../events/metadata.ts";
import { auditWhere, subjectIds } from "../clinical/audit_trail.ts";
import type { EventStore } from "../store/event_store.ts";
import { int, type Query, sql } from "../store/sql.ts";
import { auditEventsJson, type BalpContext } from "./fhir_balp.ts";
import {
  STORED_EVENT_COLUMNS,
  type StoredEvent,
  type StoredEventRow,
  toStoredEvent,
} from "./stored_event.ts";

/**
 * The audit export, shared by `GET /v1/audit/export` and `deno task audit
 * export`: the log (or the part a filter selects) streamed in constant
 * memory. Pages of {@link DEFAULT_PAGE} events are read by keyset on the
 * global position, up to the position the export started at, one page ahead
 * of what the consumer has taken (a ReadableStream pulls only when its
 * reader wants more, so a slow client slows the reads down).
 */
export type ExportFormat = "jsonl" | "csv" | "fhir";

export interface ExportFilter {
  from?: Date;
  to?: Date;
  patientId?: string;
}

export const CONTENT_TYPES: Record<ExportFormat, string> = {
  jsonl: "application/x-ndjson",
  csv: "text/csv; charset=utf-8",
  fhir: "application/fhir+json",
};

export const FILE_EXTENSIONS: Record<ExportFormat, string> = {
  jsonl: "jsonl",
  csv: "csv",
  fhir: "json",
};

export const DEFAULT_PAGE = 5000;

const filterSql = (f: ExportFilter, upTo: number): Query =>
  sql`${auditWhere({ patientId: f.patientId, from: f.from, to: f.to })}
    and e.global_position <= ${upTo}::bigint`;

/**
 * The last position an export started now covers. Appends hold an advisory
 * lock until they commit, so every position up to it is committed (see
 * src/clinical/audit_trail.ts).
 */
export const exportUpTo = async (store: EventStore): Promise<number> => {
  const [r] = await store.db.query<{ p: string | number | null }>(
    sql`select max(global_position)::text as p from events`,
  );
  return Number(r?.p ?? 0);
};

/** How many events the export will carry (the progress bar's total). */
export const countExport = async (
  store: EventStore,
  f: ExportFilter,
  upTo: number,
): Promise<number> => {
  const [r] = await store.db.query<{ n: string | number }>(
    sql`select count(*)::text as n from events e where ${filterSql(f, upTo)}`,
  );
  return Number(r?.n ?? 0);
};

const page = async (
  store: EventStore,
  f: ExportFilter,
  upTo: number,
  after: number,
  limit: number,
): Promise<StoredEvent[]> => {
  const rows = await store.db.query<StoredEventRow>(
    sql`select ${STORED_EVENT_COLUMNS} from events e
      where ${filterSql(f, upTo)} and e.global_position > ${after}::bigint
      order by e.global_position limit ${int(limit)}`,
  );
  return rows.map(toStoredEvent);
};

// ---------------------------------------------------------------- CSV

export const CSV_COLUMNS = [
  "position",
  "time",
  "type",
  "streamId",
  "actorId",
  "actorRole",
  "subjects",
  "ip",
  "userAgent",
  "requestId",
  "grantId",
  "onBehalfOf",
  "reason",
  "outcome",
] as const;

/**
 * One CSV cell, RFC 4180: quoted when it holds a quote, comma or line
 * break (quotes doubled). A cell a spreadsheet would read as a formula
 * (starting with = + - @, or a tab or carriage return) is prefixed with '.
 */
export const csvCell = (v: string | number | null | undefined): string => {
  if (v === null || v === undefined) return "";
  let s = String(v);
  if (typeof v === "string" && /^[=+\-@\t\r]/.test(s)) s = `'${s}`;
  return /[",\r\n]/.test(s) ? `"${s.replaceAll('"', '""')}"` : s;
};

const csvRow = (cells: readonly (string | number | null | undefined)[]) =>
  cells.map(csvCell).join(",") + "\r\n";

const subjectsText = (s: Record<string, string | string[]>): string =>
  Object.entries(s).map(([k, v]) => `${k}=${Array.isArray(v) ? v.join(" ") : v}`).join("; ");

const csvLine = (store: EventStore, e: StoredEvent): string => {
  const m = (e.metadata ?? {}) as EventMetadata;
  return csvRow([
    e.globalPosition,
    e.recordedAt,
    e.type,
    e.streamId,
    m.actorId,
    m.actorRole,
    subjectsText(subjectIds(store, e.type, e.data as Record<string, unknown>)),
    m.ip,
    m.userAgent,
    m.requestId,
    m.grantId,
    m.onBehalfOf,
    m.reason,
    e.type === "AccessDenied" ? "denied" : "ok",
  ]);
};

// ---------------------------------------------------------------- FHIR

/** Grant id → source, for the purpose of use; bounded so the export stays in constant memory. */
class GrantSources {
  readonly #known = new Map<string, string>();
  constructor(private readonly store: EventStore) {}

  async load(events: readonly StoredEvent[]): Promise<void> {
    const missing = new Set<string>();
    for (const e of events) {
      const g = (e.metadata as EventMetadata | null)?.grantId;
      if (g && !this.#known.has(g)) missing.add(g);
    }
    if (missing.size === 0) return;
    if (this.#known.size + missing.size > 10_000) this.#known.clear();
    const rows = await this.store.db.query<{ id: string; source: string }>(
      sql`select data->>'grantId' as id, data->>'source' as source from events
        where type = 'AccessGranted' and data->>'grantId' = any(${[...missing]}::text[])`,
    );
    for (const g of missing) this.#known.set(g, "");
    for (const r of rows) this.#known.set(r.id, r.source);
  }

  get = (id: string): string | undefined => this.#known.get(id) || undefined;
}

// ---------------------------------------------------------------- the stream

export interface ExportOptions {
  /** The last position covered ({@link exportUpTo}, taken before the export's own event). */
  upTo: number;
  /** The server agent of FHIR AuditEvents: a base URL or a host name. */
  server: string;
  /** The Bundle's timestamp. */
  now: Date;
  pageSize?: number;
  /** Called after each page with the number of events written so far. */
  onProgress?: (events: number) => void;
}

/**
 * The export as a byte stream. jsonl: one line per event, exactly
 * `JSON.stringify` of its {@link StoredEvent} (what `audit verify --export`
 * reads). csv: a header row and one row per event. fhir: a FHIR R4 Bundle
 * (collection) of BALP AuditEvents, written head, entries, tail.
 */
export const exportStream = (
  store: EventStore,
  format: ExportFormat,
  filter: ExportFilter,
  opts: ExportOptions,
): ReadableStream<Uint8Array> => {
  const enc = new TextEncoder();
  const limit = opts.pageSize ?? DEFAULT_PAGE;
  const grants = format === "fhir" ? new GrantSources(store) : null;
  const ctx: BalpContext = {
    server: opts.server,
    grantSource: (id) => grants?.get(id),
    ...(filter.patientId ? { patientId: filter.patientId } : {}),
  };
  let after = 0;
  let done = 0;
  let finished = false;
  let first = true;
  let next: Promise<StoredEvent[]> | null = null;
  const fetchNext = () => {
    const p = page(store, filter, opts.upTo, after, limit);
    p.catch(() => {}); // awaited in pull; this only keeps an abandoned prefetch quiet
    return p;
  };

  const head = (): string => {
    if (format === "csv") return csvRow(CSV_COLUMNS);
    if (format === "fhir") {
      return `{"resourceType":"Bundle","id":"${crypto.randomUUID()}","meta":{"lastUpdated":"${opts.now.toISOString()}"},"type":"collection","timestamp":"${opts.now.toISOString()}","entry":[`;
    }
    return "";
  };

  return new ReadableStream<Uint8Array>({
    start(controller) {
      const h = head();
      if (h) controller.enqueue(enc.encode(h));
      next = fetchNext();
    },
    async pull(controller) {
      if (finished) return;
      const events = await next!;
      if (events.length === 0) {
        finished = true;
        if (format === "fhir") controller.enqueue(enc.encode("]}"));
        controller.close();
        return;
      }
      after = events.at(-1)!.globalPosition;
      // read the next page while this one is formatted and sent
      next = events.length < limit ? Promise.resolve([]) : fetchNext();
      let out = "";
      if (format === "jsonl") {
        for (const e of events) out += JSON.stringify(e) + "\n";
      } else if (format === "csv") {
        for (const e of events) out += csvLine(store, e);
      } else {
        await grants!.load(events);
        for (const e of events) {
          for (const r of auditEventsJson(e, ctx)) {
            out += `${first ? "" : ","}{"fullUrl":"urn:uuid:${r.id}","resource":${r.json}}`;
            first = false;
          }
        }
      }
      done += events.length;
      controller.enqueue(enc.encode(out));
      opts.onProgress?.(done);
    },
    cancel() {
      finished = true;
    },
  }, { highWaterMark: 1 });
};
