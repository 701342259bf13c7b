import type { Db } from "../../src/store/db.ts";
import { sql } from "../../src/store/sql.ts";
/** Small helpers for the benchmark: timing, percentiles, env knobs and a plain-text table. */

/** The q-quantile (0..1) of `values` by the nearest-rank method; NaN when empty. */
export const percentile = (values: readonly number[], q: number): number => {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.min(sorted.length, Math.max(1, Math.ceil(q * sorted.length)));
  return sorted[rank - 1]!;
};

/** A positive integer from the environment, or `fallback` when unset. */
export const envInt = (name: string, fallback: number): number => {
  const raw = Deno.env.get(name);
  if (raw === undefined || raw.trim() === "") return fallback;
  const n = Number(raw.replaceAll("_", ""));
  if (!Number.isInteger(n) || n <= 0) {
    throw new Error(`${name} must be a positive integer, got ${JSON.stringify(raw)}`);
  }
  return n;
};

/** Splits `total` into `parts` near-equal non-negative integers. */
export const split = (total: number, parts: number): number[] =>
  Array.from({ length: parts }, (_, i) => Math.floor(total / parts) + (i < total % parts ? 1 : 0));

export const fmtInt = (n: number): string =>
  Number.isFinite(n) ? Math.round(n).toLocaleString("en-US") : "-";

export const fmtMs = (n: number): string =>
  !Number.isFinite(n) ? "-" : n >= 100 ? n.toFixed(0) : n >= 10 ? n.toFixed(1) : n.toFixed(2);

export const fmtSec = (ms: number): string => `${(ms / 1000).toFixed(1)}s`;

/** Renders rows as a pipe-separated text table with aligned columns. */
export const table = (
  headers: readonly string[],
  rows: readonly (readonly string[])[],
  rightAligned: ReadonlySet<number> = new Set(),
): string => {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const cell = (s: string, i: number) =>
    rightAligned.has(i) ? s.padStart(widths[i]!) : s.padEnd(widths[i]!);
  const line = (cells: readonly string[]) =>
    `| ${cells.map((c, i) => cell(c ?? "", i)).join(" | ")} |`;
  const rule = `|${
    widths.map((w, i) => rightAligned.has(i) ? `${"-".repeat(w + 1)}:` : "-".repeat(w + 2)).join(
      "|",
    )
  }|`;
  return [line(headers), rule, ...rows.map(line)].join("\n");
};

export interface Timed {
  n: number;
  ms: number;
  latencies: number[];
}

/** `total` calls of `op(i)` over `callers` loops, each awaiting its call before the next. */
export const timed = async (
  total: number,
  callers: number,
  op: (i: number) => Promise<unknown>,
): Promise<Timed> => {
  const latencies: number[] = [];
  let next = 0;
  const t0 = performance.now();
  await Promise.all(
    split(total, callers).map(async (count) => {
      for (let k = 0; k < count; k++) {
        const i = next++;
        const s = performance.now();
        await op(i);
        latencies.push(performance.now() - s);
      }
    }),
  );
  return { n: total, ms: performance.now() - t0, latencies };
};

export const perSec = (t: Timed) => t.n / (t.ms / 1000);

/** A results-table row; `m.events` counts the section's operations (appends, requests, uploads). */
export interface BenchRow {
  workload: string;
  backend: string;
  impl: string;
  m: { events: number; appends: number; ms: number; latencies: number[] };
  latencyOf: string;
  note: string;
}

/** What main.ts lends a section: its database, cleanup and results plumbing. */
export interface SectionDeps {
  /** A fresh PostgreSQL database URL, dropped by a cleanup registered with `defer`. */
  newPgDatabase: () => Promise<string>;
  /** Registers a cleanup, run newest first when the enclosing `scoped` ends. */
  defer: (label: string, fn: () => Promise<void>) => void;
  /** Runs `fn`; what it registered with `defer` is released when it ends, however it ends. */
  scoped: <T>(fn: () => Promise<T>) => Promise<T>;
  /** Adds a row to the results table. */
  add: (row: BenchRow) => void;
  /** PostgreSQL pool size. */
  pool: number;
}

/** The user agent of benchmark requests and events. */
export const BENCH_USER_AGENT = "chartlog-bench/1";
/** What `app.request` hands Hono as the connection (Deno.serve would). */
export const BENCH_CONN = { remoteAddr: { hostname: "127.0.0.1", port: 40_000, transport: "tcp" } };

/** What the answer to a benchmark request must hold, beside status 200. */
export type Expect =
  /** A JSON object whose `id` is this one. */
  | { kind: "id"; id: string }
  /** A JSON page whose `items` is not empty; `what` names the query in the error. */
  | { kind: "items"; what: string };

/** One benchmark request: a path (with its query) and what its answer must hold. */
export interface BenchRequest {
  path: string;
  expect: Expect;
}

/** Timings of a run of requests and its wrong answers (a plain object: it crosses workers). */
export interface Phase {
  t: Timed;
  /** [error description, count]; empty when every answer was right. */
  errors: [string, number][];
}

/** Null when a response answers `expect`, else what is wrong with it. */
export const checkAnswer = async (res: Response, expect: Expect): Promise<string | null> => {
  const text = await res.text();
  let body;
  try {
    body = JSON.parse(text);
  } catch {
    return res.status === 200 ? "a body that is not JSON" : `status ${res.status}`;
  }
  // a problem's detail says which failure it was (a 503 can be several); it never carries PHI
  if (res.status !== 200) return `status ${res.status} (${body?.detail ?? body?.title ?? "?"})`;
  if (expect.kind === "id") return body?.id === expect.id ? null : "wrong record";
  return Array.isArray(body?.items) && body.items.length > 0 ? null : `no match for ${expect.what}`;
};

/**
 * `reqs` sent through `send` by `clients` loops, each awaiting its answer
 * (read in full and checked) before its next request. The same loop serves
 * both ways the benchmark requests an app: `app.request` in process, and
 * `fetch` over HTTP from a worker (http_clients_worker.ts).
 */
export const runRequests = async (
  send: (path: string) => Response | Promise<Response>,
  reqs: readonly BenchRequest[],
  clients: number,
): Promise<Phase> => {
  const errors = new Map<string, number>();
  const t = await timed(reqs.length, clients, async (i) => {
    const { path, expect } = reqs[i]!;
    let e: string | null;
    try {
      e = await checkAnswer(await send(path), expect);
    } catch (err) {
      e = `request failed: ${err instanceof Error ? err.message : err}`;
    }
    if (e) errors.set(e, (errors.get(e) ?? 0) + 1);
  });
  return { t, errors: [...errors] };
};

/** CPU time in ms of a process (user + system) from /proc; null where there is none. */
export const procCpuMs = (pid: number | "self"): number | null => {
  try {
    const f = Deno.readTextFileSync(`/proc/${pid}/stat`).split(") ")[1]!.split(" ");
    return (Number(f[11]) + Number(f[12])) * 1000 / 100; // clock ticks (USER_HZ 100)
  } catch {
    return null;
  }
};

/**
 * Page faults of a process so far (minor and major, all its threads); null
 * where there is none. A first touch of memory faults, and on this machine
 * (a Firecracker guest) a fault costs about 20 µs: a share of CPU that a
 * process which keeps freeing and allocating large blocks pays again and again.
 */
export const procFaults = (pid: number | "self"): number | null => {
  try {
    const f = Deno.readTextFileSync(`/proc/${pid}/stat`).split(") ")[1]!.split(" ");
    return Number(f[7]) + Number(f[9]); // minflt, majflt
  } catch {
    return null;
  }
};

/**
 * Context switches of a process so far, voluntary and not, over all its
 * threads; null where there is none. On a VM every switch (a wait for a
 * lock, a socket or a flush, then the wakeup) costs CPU of its own.
 */
export const procSwitches = (pid: number | "self"): number | null => {
  try {
    let total = 0;
    for (const t of Deno.readDirSync(`/proc/${pid}/task`)) {
      const status = Deno.readTextFileSync(`/proc/${pid}/task/${t.name}/status`);
      for (const m of status.matchAll(/^(?:non)?voluntary_ctxt_switches:\s+(\d+)$/gm)) {
        total += Number(m[1]);
      }
    }
    return total;
  } catch {
    return null;
  }
};

/**
 * CPU spent by this process (server and its clients alike: in process they
 * share a thread, over HTTP the clients' Worker is part of it) and by the
 * database's server processes (its backends, when PostgreSQL runs on this
 * machine), between two calls. Wall-clock rates on a shared 2-core machine
 * move with whatever else runs; CPU per request moves much less, and shows
 * which side a change saved on.
 */
export const cpuMeter = async (db: Db) => {
  const backends = async () =>
    (await db.query<{ pid: number }>(
      sql`select pid from pg_stat_activity where datname = current_database()
        and backend_type = 'client backend'`,
    )).map((r) => Number(r.pid));
  const pgOf = async (f: (pid: number) => number | null) => {
    let total = 0;
    for (const pid of await backends()) {
      const v = f(pid);
      if (v === null) return null;
      total += v;
    }
    return total;
  };
  const diff = (a: number | null, b: number | null) =>
    // a backend that ended meanwhile takes its share along: a floor, not a total
    a === null || b === null ? null : Math.max(0, b - a);
  const lsn = async () =>
    Number(
      (await db.query<{ b: string }>(
        sql`select pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint::text as b`,
      ))[0]!.b,
    );
  const app0 = procCpuMs("self"), pg0 = await pgOf(procCpuMs);
  const appSw0 = procSwitches("self"), pgSw0 = await pgOf(procSwitches);
  const appFl0 = procFaults("self"), pgFl0 = await pgOf(procFaults);
  const wal0 = await lsn();
  return async () => {
    const app1 = procCpuMs("self"), pg1 = await pgOf(procCpuMs);
    const appSw1 = procSwitches("self"), pgSw1 = await pgOf(procSwitches);
    const appFl1 = procFaults("self"), pgFl1 = await pgOf(procFaults);
    return {
      appMs: diff(app0, app1),
      pgMs: diff(pg0, pg1),
      appSwitches: diff(appSw0, appSw1),
      pgSwitches: diff(pgSw0, pgSw1),
      appFaults: diff(appFl0, appFl1),
      pgFaults: diff(pgFl0, pgFl1),
      walBytes: await lsn() - wal0,
    };
  };
};
