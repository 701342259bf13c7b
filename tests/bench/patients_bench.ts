/**
 * The `patients` section of `deno task bench`: what auditing every PHI read
 * costs. On a fresh PostgreSQL database it seeds patients through
 * registerPatient, logs one clinical_ops user in, then drives the HTTP app
 * with concurrent clients: reads of single patients (GET /v1/patients/:id)
 * and prefix searches (GET /v1/patients?search=..&limit=20), once through a
 * normal runtime (each request appends a PatientViewed / PatientsSearched
 * event) and once through a runtime over the same database opened with
 * `auditReads: false`, alternating on/off/off/on in halves. The audited run
 * must add exactly one access event per request. Prints figures; never asserts on time.
 *
 * Requests go to the Hono app in process (`app.request`): routing,
 * validation, authentication, policy, handler and JSON (de)serialisation all
 * run, but no socket or HTTP parsing does: on 2 cores an HTTP client in the
 * same process would take CPU from the server and blur what auditing costs.
 *
 * Knobs (positive integers):
 *
 *   BENCH_PATIENTS         patients seeded                          (default 100000)
 *   BENCH_PATIENT_SEEDERS  concurrent registerPatient callers       (default 64)
 *   BENCH_PATIENT_READS    requests per measured workload, in total (default 4000)
 *   BENCH_PATIENT_CLIENTS  concurrent clients                       (default 32)
 *   BENCH_PATIENT_FEW      clients of the low-concurrency GET pair  (default 4)
 *   BENCH_BARE_ROWS        rows of the bare Hono + postgres.js table (default 20000)
 *   BENCH_PATIENT_DIAG     sequential samples per step of the read breakdown (default 300)
 *
 * The PostgreSQL pool is BENCH_POOL, as in the other sections.
 *
 * Issue 15's targets are printed with "meets"/"below" beside them:
 * (3) the audited GET at BENCH_PATIENT_CLIENTS against a bare Hono +
 * postgres.js GET by primary key on a BENCH_BARE_ROWS-row table, requested
 * the same way (`app.request`, same clients, same pool size) in the same run;
 * (4) audited over unaudited GET at BENCH_PATIENT_FEW clients; (5) the
 * registration rate of the seeding (BENCH_PATIENT_SEEDERS callers), an
 * absolute figure printed with the load average.
 */
import type { EventMetadata } from "../../events/metadata.ts";
import { registerUser } from "../../src/auth/accounts.ts";
import { loadPatient, patientStream, registerPatient } from "../../src/clinical/patients.ts";
import { searchPatients } from "../../src/clinical/patient_search.ts";
import { fold, type PatientInput } from "../../src/domain/patient.ts";
import { loadConfig } from "../../src/config.ts";
import { createApp } from "../../src/http/app.ts";
import { createLogger } from "../../src/logger.ts";
import { openRuntime, type Runtime } from "../../src/runtime.ts";
import { sql } from "../../src/store/sql.ts";
import { Hono } from "hono";
import postgres from "postgres";
import {
  BENCH_CONN,
  BENCH_USER_AGENT,
  envInt,
  fmtInt,
  fmtMs,
  fmtSec,
  percentile,
  perSec,
  type SectionDeps,
  split,
  table,
  type Timed,
  timed,
} from "./stats.ts";
import { PASSWORD } from "../support/users.ts";

const cfg = {
  patients: envInt("BENCH_PATIENTS", 100_000),
  seeders: envInt("BENCH_PATIENT_SEEDERS", 64),
  reads: envInt("BENCH_PATIENT_READS", 4000),
  clients: envInt("BENCH_PATIENT_CLIENTS", 32),
  diag: envInt("BENCH_PATIENT_DIAG", 300),
  few: envInt("BENCH_PATIENT_FEW", 4),
  bareRows: envInt("BENCH_BARE_ROWS", 20_000),
};
/** Audited throughput over unaudited throughput, per workload, should be at least this. */
const RATIO_TARGET = 0.5;
/** Issue 15 target 3: audited GET over the bare Hono + postgres.js GET by primary key. */
const BARE_TARGET = 0.5;
/** Issue 15 target 4: audited over unaudited GET at few clients. */
const FEW_TARGET = 0.8;
/** Issue 15 target 5: patients registered per second by the seeders. */
const REGISTER_TARGET = 2000;

const loadavg = () => {
  try {
    return Deno.readTextFileSync("/proc/loadavg").split(" ").slice(0, 3).join(" ");
  } catch {
    return "n/a";
  }
};
const verdict = (ok: boolean) => ok ? "meets" : "below";

// ---------------------------------------------------------------------------
// Deterministic synthetic patients

/** mulberry32: a small seeded PRNG, so every run seeds and asks for the same things. */
const prng = (seed: number) => () => {
  seed = (seed + 0x6d2b79f5) | 0;
  let t = seed;
  t = Math.imul(t ^ (t >>> 15), t | 1);
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
};

const FIRST = [
  "James",
  "Mary",
  "Robert",
  "Patricia",
  "John",
  "Jennifer",
  "Michael",
  "Linda",
  "David",
  "Elizabeth",
  "William",
  "Barbara",
  "Richard",
  "Susan",
  "Joseph",
  "Jessica",
  "Thomas",
  "Sarah",
  "Charles",
  "Karen",
  "Christopher",
  "Lisa",
  "Daniel",
  "Nancy",
  "Matthew",
  "Betty",
  "Anthony",
  "Sandra",
  "Mark",
  "Ashley",
  "Donald",
  "Kimberly",
  "Steven",
  "Emily",
  "Andrew",
  "Donna",
  "Paul",
  "Michelle",
  "Joshua",
  "Carol",
  "Kenneth",
  "Amanda",
  "Kevin",
  "Melissa",
  "Brian",
  "Deborah",
  "George",
  "Stephanie",
  "Timothy",
  "Rebecca",
  "Ronald",
  "Laura",
  "Edward",
  "Helen",
  "Jason",
  "Olivia",
  "Ursula",
  "Quentin",
  "Yolanda",
  "Xavier",
  "Ivan",
  "Victor",
  "Zoe",
  "Omar",
  "Ada",
];
const LAST = [
  "Smith",
  "Johnson",
  "Williams",
  "Brown",
  "Jones",
  "Garcia",
  "Miller",
  "Davis",
  "Rodriguez",
  "Martinez",
  "Hernandez",
  "Lopez",
  "Gonzalez",
  "Wilson",
  "Anderson",
  "Thomas",
  "Taylor",
  "Moore",
  "Jackson",
  "Martin",
  "Lee",
  "Perez",
  "Thompson",
  "White",
  "Harris",
  "Sanchez",
  "Clark",
  "Ramirez",
  "Lewis",
  "Robinson",
  "Walker",
  "Young",
  "Allen",
  "King",
  "Wright",
  "Scott",
  "Torres",
  "Nguyen",
  "Hill",
  "Flores",
  "Green",
  "Adams",
  "Nelson",
  "Baker",
  "Hall",
  "Rivera",
  "Campbell",
  "Mitchell",
  "Carter",
  "Roberts",
  "Okafor",
  "Ivanova",
  "Quigley",
  "Underwood",
  "Vasquez",
  "Yamamoto",
  "Zimmerman",
  "Eriksen",
  "Fitzgerald",
  "Oyelaran",
  "Kowalski",
  "Duarte",
  "Petrov",
  "Lovelace",
];
const CITIES: [string, string][] = [
  ["Springfield", "IL"],
  ["Portland", "OR"],
  ["Austin", "TX"],
  ["Denver", "CO"],
  ["Madison", "WI"],
  ["Burlington", "VT"],
  ["Tucson", "AZ"],
  ["Raleigh", "NC"],
];
const GENDERS = ["M", "F", "O", "U"] as const;

const pick = <T>(r: () => number, xs: readonly T[]): T => xs[Math.floor(r() * xs.length)]!;
const digits = (r: () => number, n: number) =>
  Array.from({ length: n }, () => Math.floor(r() * 10)).join("");

/** Patient number `i` (0-based): valid input with every optional block filled in. */
const patientInput = (r: () => number, i: number): PatientInput => {
  const firstName = pick(r, FIRST), lastName = pick(r, LAST);
  const [city, state] = pick(r, CITIES);
  const y = 1930 + Math.floor(r() * 90), m = 1 + Math.floor(r() * 12), d = 1 + Math.floor(r() * 28);
  return {
    // digits only: the letter prefixes searched for never match an MRN
    mrn: String(i + 1).padStart(8, "0"),
    firstName,
    lastName,
    dateOfBirth: `${y}-${String(m).padStart(2, "0")}-${String(d).padStart(2, "0")}`,
    gender: pick(r, GENDERS),
    phone: `+1555${digits(r, 7)}`,
    email: `${firstName}.${lastName}${i + 1}@example.org`.toLowerCase(),
    address: { line1: `${1 + Math.floor(r() * 9999)} Main St`, city, state, zip: digits(r, 5) },
    emergencyContact: {
      name: `${pick(r, FIRST)} ${lastName}`,
      phone: `+1555${digits(r, 7)}`,
      relation: "spouse",
    },
    insurance: { payer: "Acme Health", memberId: `M${digits(r, 9)}`, groupNumber: null },
  };
};

/** Every 2-letter prefix of a seeded name, lower case: each search finds someone. */
const PREFIXES = [...new Set([...FIRST, ...LAST].map((n) => n.slice(0, 2).toLowerCase()))];

// ---------------------------------------------------------------------------
// Timing

// ---------------------------------------------------------------------------

const openPatientsRuntime = async (
  deps: SectionDeps,
  env: Record<string, string>,
  auditReads: boolean,
): Promise<Runtime> => {
  const config = loadConfig(env);
  const runtime = await openRuntime(config, createLogger("silent"), {
    workers: false,
    auditReads,
  });
  deps.defer(`close patients runtime (audit ${auditReads ? "on" : "off"})`, () => runtime.close());
  return runtime;
};

const countEvents = async (runtime: Runtime, type: string): Promise<number> => {
  const [r] = await runtime.db.query<{ n: number }>(
    sql`select count(*)::int as n from events where type = ${type}`,
  );
  return Number(r?.n ?? 0);
};

/** Registers `n` patients with `seeders` concurrent callers; returns their ids in order. */
const seed = async (runtime: Runtime, n: number, seeders: number): Promise<string[]> => {
  const ids: string[] = new Array(n);
  const meta: EventMetadata = { actorId: "bench-seed", userAgent: BENCH_USER_AGENT };
  let next = 0, done = 0, lastReport = performance.now();
  const t0 = performance.now();
  await Promise.all(Array.from({ length: Math.min(seeders, n) }, async () => {
    while (next < n) {
      const i = next++;
      // one generator per patient: the same data whatever the interleaving
      const p = await registerPatient(
        runtime.store,
        runtime.indexKey,
        patientInput(prng(0x5eed + i), i),
        meta,
        new Date(),
      );
      ids[i] = p.id;
      done++;
      const now = performance.now();
      if (now - lastReport > 15_000) {
        lastReport = now;
        console.log(
          `    ${fmtInt(done)} / ${fmtInt(n)} after ${fmtSec(now - t0)} ` +
            `(${fmtInt(done / ((now - t0) / 1000))}/s)`,
        );
      }
    }
  }));
  return ids;
};

type App = ReturnType<typeof createApp>;

interface Workload {
  name: string;
  latencyOf: string;
  type: "PatientViewed" | "PatientsSearched";
  /** Request `i` of run `run`; resolves to an error description or null. */
  request: (app: App, token: string, run: number, i: number) => Promise<string | null>;
}

const get = (app: App, token: string, path: string) =>
  app.request(path, {
    headers: { authorization: `Bearer ${token}`, "user-agent": BENCH_USER_AGENT },
  }, BENCH_CONN);

const workloads = (ids: readonly string[]): Workload[] => [
  {
    name: "GET /v1/patients/:id",
    latencyOf: "request",
    type: "PatientViewed",
    request: async (app, token, run, i) => {
      const r = prng(run * 1_000_003 + i);
      const id = ids[Math.floor(r() * ids.length)]!;
      const res = await get(app, token, `/v1/patients/${id}`);
      const body = await res.json();
      if (res.status !== 200) return `status ${res.status}`;
      return body.id === id ? null : "wrong patient";
    },
  },
  {
    name: "GET /v1/patients?search=xx&limit=20",
    latencyOf: "request",
    type: "PatientsSearched",
    request: async (app, token, run, i) => {
      const r = prng(run * 1_000_003 + i);
      const prefix = pick(r, PREFIXES);
      const res = await get(app, token, `/v1/patients?search=${prefix}&limit=20`);
      const body = await res.json();
      if (res.status !== 200) return `status ${res.status}`;
      return body.items.length > 0 ? null : `no match for ${prefix}`;
    },
  },
];

type Which = "on" | "off";
interface Side {
  runtime: Runtime;
  app: App;
}

/**
 * One workload through both runtimes: an untimed warm-up of each, then
 * `cfg.reads` timed requests per runtime in halves ordered on, off, off, on
 * (ABBA), so that a drift in background load weighs on both alike. Every
 * timed phase checks the access-event count: audited phases must add exactly
 * one event per request, unaudited ones none.
 */
const measurePair = async (
  w: Workload,
  sides: Record<Which, Side>,
  token: string,
  k: number,
  clients = cfg.clients,
): Promise<Record<Which, { t: Timed; note: string }>> => {
  const acc = {
    on: { n: 0, ms: 0, latencies: [] as number[], grew: 0, errors: new Map<string, number>() },
    off: { n: 0, ms: 0, latencies: [] as number[], grew: 0, errors: new Map<string, number>() },
  };
  // each (runtime, phase) draws its own random sequence: no run reads pages another warmed
  const op = (which: Which, errors: Map<string, number> | null) => async (i: number) => {
    const e = await w.request(sides[which].app, token, 2 * k + (which === "on" ? 0 : 1), i);
    if (e && errors) errors.set(e, (errors.get(e) ?? 0) + 1);
  };
  // warm-up: JIT, every pool connection, plan caches
  for (const which of ["on", "off"] as const) {
    await timed(Math.max(clients * 4, 200), clients, (i) => op(which, null)(1e6 + i));
  }
  const [a, b] = split(cfg.reads, 2) as [number, number];
  // [runtime, requests, first request index]
  const plan: [Which, number, number][] = [
    ["on", a, 0],
    ["off", a, 0],
    ["off", b, a],
    ["on", b, a],
  ];
  const counter = sides.on.runtime; // either: one database
  for (const [which, count, offset] of plan) {
    const x = acc[which];
    const before = await countEvents(counter, w.type);
    const t = await timed(count, clients, (i) => op(which, x.errors)(offset + i));
    x.grew += (await countEvents(counter, w.type)) - before;
    x.n += t.n;
    x.ms += t.ms;
    x.latencies.push(...t.latencies);
  }
  const result = (which: Which) => {
    const x = acc[which];
    const expected = which === "on" ? x.n : 0;
    const audit = x.grew === expected
      ? (which === "on" ? "audit events ok" : "no audit events, as expected")
      : `AUDIT MISMATCH: ${w.type} grew by ${fmtInt(x.grew)}, expected ${fmtInt(expected)}`;
    const errs = x.errors.size === 0
      ? "all responses ok"
      : "ERRORS: " + [...x.errors].map(([e, c]) => `${c} x ${e}`).join(", ");
    return { t: { n: x.n, ms: x.ms, latencies: x.latencies }, note: `${audit}; ${errs}` };
  };
  return { on: result("on"), off: result("off") };
};

/**
 * The reference of issue 15 target 3: a bare Hono app over postgres.js that
 * answers `GET /bare/:id` with one row of a `cfg.bareRows`-row table, found
 * by primary key. No auth, no validation, no audit: what the stack itself
 * needs for a keyed read. Its rows are shaped like a patient record (text,
 * a date, three JSON blocks). Requested like the app (`app.request`, same
 * clients, a pool of the same size).
 */
const openBare = async (deps: SectionDeps, url: string) => {
  const pg = postgres(url, { max: deps.pool, onnotice: () => {} });
  deps.defer("close bare postgres.js pool", () => pg.end());
  await pg`create table bare_patients (
    id uuid primary key, mrn text not null, first_name text not null, last_name text not null,
    date_of_birth date not null, gender text not null, phone text, email text,
    address jsonb, emergency_contact jsonb, insurance jsonb,
    created_at timestamptz not null, updated_at timestamptz not null)`;
  const ids = await pg<{ id: string }[]>`insert into bare_patients
    select gen_random_uuid(), lpad(i::text, 8, '0'), 'First' || i, 'Last' || i,
      date '1930-01-01' + (i % 30000), 'F', '+1555' || lpad(i::text, 7, '0'),
      'p' || i || '@example.org',
      jsonb_build_object('line1', i || ' Main St', 'line2', null, 'city', 'Austin',
        'state', 'TX', 'zip', '78701'),
      jsonb_build_object('name', 'Someone' || i, 'phone', '+15550000000', 'relation', 'spouse'),
      jsonb_build_object('payer', 'Acme Health', 'memberId', 'M' || i, 'groupNumber', null),
      now(), now()
    from generate_series(1, ${cfg.bareRows}) as i
    returning id::text as id`;
  await pg`vacuum (analyze) bare_patients`;
  const app = new Hono();
  app.get("/bare/:id", async (c) => {
    const [row] = await pg`select * from bare_patients where id = ${c.req.param("id")}::uuid`;
    return row ? c.json(row) : c.json({ title: "not found" }, 404);
  });
  return { app, ids: ids.map((r) => r.id) };
};

/** `4 x cfg.reads` requests to the bare route over `clients` loops, after a warm-up. */
const measureBare = async (
  bare: Awaited<ReturnType<typeof openBare>>,
  clients: number,
): Promise<Timed> => {
  const errors = new Map<string, number>();
  const op = (seed: number) => async (i: number) => {
    const r = prng(seed + i);
    const id = bare.ids[Math.floor(r() * bare.ids.length)]!;
    const res = await bare.app.request(`/bare/${id}`, {
      headers: { "user-agent": BENCH_USER_AGENT },
    }, BENCH_CONN);
    const body = await res.json();
    const e = res.status !== 200 ? `status ${res.status}` : body.id !== id ? "wrong row" : null;
    if (e) errors.set(e, (errors.get(e) ?? 0) + 1);
  };
  await timed(Math.max(clients * 4, 200), clients, op(7_000_000));
  // four times the app's count: at its rate, `cfg.reads` alone is over in a blink
  const t = await timed(cfg.reads * 4, clients, op(9_000_000));
  if (errors.size > 0) {
    throw new Error(`bare route: ${[...errors].map(([e, c]) => `${c} x ${e}`).join(", ")}`);
  }
  return t;
};

/**
 * Where a read's time goes: sequential, one call at a time, on random
 * patients (mostly not read before: the codec's key cache is cold for them),
 * through the unaudited runtime; plus the audit append alone.
 */
const breakdown = async (runtime: Runtime, app: App, token: string, ids: readonly string[]) => {
  const n = cfg.diag;
  const r = prng(0xd1a9);
  const fresh = () => ids[Math.floor(r() * ids.length)]!;
  const now = new Date();
  const { store } = runtime;
  const actor = await runtime.sessions.authenticate(token);
  /** `n` sequential calls of `fn` after a few untimed ones. */
  const seq = async (fn: () => Promise<unknown>) => {
    for (let k = 0; k < Math.min(20, n); k++) await fn();
    return (await timed(n, 1, fn)).latencies;
  };
  const steps: [string, () => Promise<number[]>][] = [
    [
      "sessions.authenticate (JWT + 1 query)",
      () => seq(() => runtime.sessions.authenticate(token)),
    ],
    [
      "readStream, sealed (1 query, no unseal)",
      () => seq(() => store.readStream(patientStream(fresh()), { unseal: false })),
    ],
    [
      "readStream + unseal, key not cached",
      () => seq(() => store.readStream(patientStream(fresh()))),
    ],
    ["readStream + unseal, key cached", async () => {
      // the second read of each patient: its key is in the codec's cache
      const latencies: number[] = [];
      for (let k = 0; k < n; k++) {
        const stream = patientStream(fresh());
        await store.readStream(stream);
        const s = performance.now();
        await store.readStream(stream);
        latencies.push(performance.now() - s);
      }
      return latencies;
    }],
    ["fold alone (in memory)", async () => {
      const events = await store.readStream(patientStream(fresh()));
      const latencies: number[] = [];
      for (let k = 0; k < n; k++) {
        const s = performance.now();
        fold(events);
        latencies.push(performance.now() - s);
      }
      return latencies;
    }],
    [
      "loadPatient (read + unseal + fold + view)",
      () => seq(() => loadPatient(store, fresh(), now)),
    ],
    [
      "GET /v1/patients/:id, audit off",
      () => seq(async () => await (await get(app, token, `/v1/patients/${fresh()}`)).json()),
    ],
    [
      "searchPatients (page + count queries)",
      () =>
        seq(() =>
          searchPatients(store, {
            search: pick(r, PREFIXES),
            ordering: "last_name",
            limit: 20,
            includeDeleted: false,
            scope: null, // an admin's list: every patient
          })
        ),
    ],
    [
      "audit append alone (1 commit each)",
      () =>
        seq(() =>
          store.append(`access-${actor.userId}`, "any", [{
            type: "PatientViewed",
            data: { patientId: fresh(), asOf: null },
          }], { actorId: actor.userId, actorRole: actor.role, userAgent: BENCH_USER_AGENT })
        ),
    ],
    [
      // what one durable commit costs on this machine now: an audited read cannot be cheaper
      "raw insert + commit, 1 row (postgres.js)",
      async () => {
        await runtime.db.exec("create table if not exists bench_commit (id serial, x text)");
        return await seq(() => runtime.db.query(sql`insert into bench_commit (x) values ('x')`));
      },
    ],
  ];
  const rows: string[][] = [];
  for (const [label, run] of steps) {
    const latencies = await run();
    rows.push([label, fmtMs(percentile(latencies, 0.5)), fmtMs(percentile(latencies, 0.99))]);
  }
  console.log(`\n  where a read's time goes (sequential, ${fmtInt(n)} samples each):\n`);
  console.log(
    table(["step", "p50 ms", "p99 ms"], rows, new Set([1, 2])).split("\n").map((l) => `  ${l}`)
      .join("\n"),
  );
};

/** Issue 15 targets 3, 4 and 5 as lines with "meets"/"below" beside each. */
const issueTargets = (
  x: {
    audited: number;
    bare: number;
    fewOn: number;
    fewOff: number;
    seedRate: number;
    seedLoad: string;
  },
): string[] => {
  const bareRatio = x.audited / x.bare, fewRatio = x.fewOn / x.fewOff;
  return [
    `\n## Issue 15 targets (patients)\n`,
    table(["target", "measured", "against", "ratio", "goal", "verdict"], [
      [
        `3. audited GET /v1/patients/:id, ${cfg.clients} clients / bare Hono + postgres.js`,
        `${fmtInt(x.audited)} req/s`,
        `${fmtInt(x.bare)} req/s`,
        bareRatio.toFixed(2),
        `≥ ${BARE_TARGET}`,
        verdict(bareRatio >= BARE_TARGET),
      ],
      [
        `4. audited / unaudited GET /v1/patients/:id, ${cfg.few} clients`,
        `${fmtInt(x.fewOn)} req/s`,
        `${fmtInt(x.fewOff)} req/s`,
        fewRatio.toFixed(2),
        `≥ ${FEW_TARGET}`,
        verdict(fewRatio >= FEW_TARGET),
      ],
      [
        `5. patient registration, ${cfg.seeders} callers (load average ${x.seedLoad})`,
        `${fmtInt(x.seedRate)} patients/s`,
        "-",
        "-",
        `≥ ${fmtInt(REGISTER_TARGET)}/s`,
        verdict(x.seedRate >= REGISTER_TARGET),
      ],
    ], new Set([1, 2, 3])),
  ];
};

/**
 * The patients section. Returns summary lines (the audited/unaudited ratios)
 * for main.ts to print after the results table.
 */
export const patientsBench = async (deps: SectionDeps): Promise<string[]> => {
  console.log(JSON.stringify(cfg));
  return await deps.scoped(async () => {
    const url = await deps.newPgDatabase();
    // a blob directory of its own: each is claimed by the database that first opens it
    const blobDir = await Deno.makeTempDir({ prefix: "chartlog_bench_blobs_" });
    deps.defer("remove patients blob dir", () => Deno.remove(blobDir, { recursive: true }));
    const env = {
      CHARTLOG_BLOB_DIR: blobDir,
      DATABASE_URL: url,
      CHARTLOG_MASTER_KEY: btoa(String.fromCharCode(...crypto.getRandomValues(new Uint8Array(32)))),
      CHARTLOG_ENV: "test",
      CHARTLOG_DB_POOL_MAX: String(deps.pool),
      CHARTLOG_MFA_REQUIRED_ROLES: "none",
      CHARTLOG_LOGIN_RATE_PER_MIN: "100000",
      CHARTLOG_ACCESS_TOKEN_TTL_S: "3600",
      CHARTLOG_SESSION_IDLE_TIMEOUT_S: "7200",
      LOG_LEVEL: "silent",
    };
    const config = loadConfig(env);
    const appFor = (runtime: Runtime) =>
      createApp({ config, log: createLogger("silent"), runtime: () => runtime });

    // Seed through a runtime of its own, closed before measuring: the
    // measured runtimes start with empty key caches.
    const n = cfg.patients;
    let seedLoad = "n/a";
    console.log(`  seeding ${fmtInt(n)} patients (${cfg.seeders} concurrent registerPatient)...`);
    const { ids, seedMs, vacuumMs, sizes } = await deps.scoped(async () => {
      const runtime = await openPatientsRuntime(deps, env, true);
      const t0 = performance.now();
      const ids = await seed(runtime, n, cfg.seeders);
      const seedMs = performance.now() - t0;
      seedLoad = loadavg();
      const v0 = performance.now();
      for (const t of ["events", "patients", "subject_keys"]) {
        await runtime.db.exec(`vacuum (analyze) ${t}`);
      }
      const vacuumMs = performance.now() - v0;
      const [sizes] = await runtime.db.query<{ events: string; patients: string; keys: string }>(
        sql`select pg_size_pretty(pg_total_relation_size('events')) as events,
          pg_size_pretty(pg_total_relation_size('patients')) as patients,
          pg_size_pretty(pg_total_relation_size('subject_keys')) as keys`,
      );
      return { ids, seedMs, vacuumMs, sizes: sizes! };
    });
    const seedRate = n / (seedMs / 1000);
    console.log(
      `  seeded ${fmtInt(n)} patients in ${fmtSec(seedMs)} (${fmtInt(seedRate)} patients/s, ` +
        `2 appends each), vacuum analyze ${fmtSec(vacuumMs)}; sizes: events ${sizes.events}, ` +
        `patients ${sizes.patients}, subject_keys ${sizes.keys}`,
    );

    // The reference first, its pool closed before the runtimes open theirs:
    // three pools of BENCH_POOL at once can pass the server's max_connections.
    console.log(`\n  [bare Hono + postgres.js GET by primary key, ${fmtInt(cfg.bareRows)} rows]`);
    const bare = await deps.scoped(async () => measureBare(await openBare(deps, url), cfg.clients));

    // Both runtimes open side by side over the one database, each with a cold
    // key cache; each workload alternates between them (see measurePair).
    const on = await openPatientsRuntime(deps, env, true);
    const off = await openPatientsRuntime(deps, env, false);
    const apps = { on: appFor(on), off: appFor(off) };
    const u = await registerUser(on.store, {
      email: "ops@clinic.test",
      name: "Bench clinical ops",
      role: "clinical_ops",
      password: PASSWORD,
      patientId: null,
    }, { actorId: "bench-setup" });
    const res = await apps.on.request("/v1/auth/login", {
      method: "POST",
      headers: { "content-type": "application/json", "user-agent": BENCH_USER_AGENT },
      body: JSON.stringify({ email: u.email, password: PASSWORD }),
    }, BENCH_CONN);
    const login = await res.json();
    if (res.status !== 200) throw new Error(`login failed: ${res.status} ${login.title}`);
    const token: string = login.accessToken; // one session, valid through either runtime

    const results = new Map<string, { on: Timed; off: Timed }>();
    const sides = { on: { runtime: on, app: apps.on }, off: { runtime: off, app: apps.off } };
    for (const [k, w] of workloads(ids).entries()) {
      console.log(`\n  [${w.name}]`);
      const pair = await measurePair(w, sides, token, k);
      for (const which of ["on", "off"] as const) {
        const { t, note } = pair[which];
        const workload = `${w.name} x${fmtInt(t.n)}, ${cfg.clients} clients, audit ${which}`;
        deps.add({
          workload,
          backend: "PostgreSQL",
          impl: "Chartlog",
          m: { events: t.n, appends: 0, ms: t.ms, latencies: t.latencies },
          latencyOf: w.latencyOf,
          note: `req/s; ${fmtInt(n)} patients; ${note}`,
        });
        console.log(
          `  ${workload}: ${fmtInt(perSec(t))} req/s, p50 ${
            fmtMs(percentile(t.latencies, 0.5))
          } ms, p99 ${fmtMs(percentile(t.latencies, 0.99))} ms (${fmtSec(t.ms)}); ${note}`,
        );
      }
      results.set(w.name, { on: pair.on.t, off: pair.off.t });
    }
    const getById = workloads(ids)[0]!;
    console.log(`\n  [${getById.name}, ${cfg.few} clients]`);
    const few = await measurePair(getById, sides, token, 2, cfg.few);
    for (const which of ["on", "off"] as const) {
      const { t, note } = few[which];
      const workload = `${getById.name} x${fmtInt(t.n)}, ${cfg.few} clients, audit ${which}`;
      deps.add({
        workload,
        backend: "PostgreSQL",
        impl: "Chartlog",
        m: { events: t.n, appends: 0, ms: t.ms, latencies: t.latencies },
        latencyOf: getById.latencyOf,
        note: `req/s; ${fmtInt(n)} patients; ${note}`,
      });
      console.log(
        `  ${workload}: ${fmtInt(perSec(t))} req/s, p50 ${
          fmtMs(percentile(t.latencies, 0.5))
        } ms, p99 ${fmtMs(percentile(t.latencies, 0.99))} ms (${fmtSec(t.ms)}); ${note}`,
      );
    }

    const bareWorkload = `GET /bare/:id (bare Hono + postgres.js) x${
      fmtInt(bare.n)
    }, ${cfg.clients} clients`;
    deps.add({
      workload: bareWorkload,
      backend: "PostgreSQL",
      impl: "Hono + postgres.js",
      m: { events: bare.n, appends: 0, ms: bare.ms, latencies: bare.latencies },
      latencyOf: "request",
      note: `req/s; ${fmtInt(cfg.bareRows)} rows; reference of issue 15 target 3`,
    });
    console.log(
      `  ${bareWorkload}: ${fmtInt(perSec(bare))} req/s, p50 ${
        fmtMs(percentile(bare.latencies, 0.5))
      } ms, p99 ${fmtMs(percentile(bare.latencies, 0.99))} ms (${fmtSec(bare.ms)})`,
    );

    await breakdown(off, apps.off, token, ids);

    const rows = [...results].map(([name, { on, off }]) => {
      const ratio = perSec(on) / perSec(off);
      return [
        name,
        fmtInt(perSec(on)),
        fmtInt(perSec(off)),
        ratio.toFixed(2),
        ratio >= RATIO_TARGET ? "meets target" : "BELOW target",
      ];
    });
    return [
      `\n## Patients: what auditing reads costs (${fmtInt(n)} patients, seeded in ${
        fmtSec(seedMs)
      }, ${fmtInt(seedRate)}/s)\n`,
      table(
        [
          "workload",
          "audited req/s",
          "unaudited req/s",
          "audited/unaudited",
          `target ≥ ${RATIO_TARGET}`,
        ],
        rows,
        new Set([1, 2, 3]),
      ),
      ...issueTargets({
        audited: perSec(results.get(getById.name)!.on),
        bare: perSec(bare),
        fewOn: perSec(few.on.t),
        fewOff: perSec(few.off.t),
        seedRate,
        seedLoad,
      }),
    ];
  });
};
