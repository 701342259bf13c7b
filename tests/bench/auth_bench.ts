/**
 * The `auth` section of `deno task bench`: login and access-token checking
 * through the real runtime (openRuntime, Sessions), on a fresh PostgreSQL
 * database and on PGlite in memory. Prints figures; never asserts on time.
 *
 * Knobs (positive integers):
 *
 *   BENCH_LOGINS          logins per login workload                (default 24)
 *   BENCH_LOGIN_CLIENTS   concurrent clients in the concurrent one (default 8)
 *   BENCH_JWT_VERIFIES    bare verifyAccessToken calls             (default 20000)
 *   BENCH_AUTHS           Sessions.authenticate calls              (default 5000)
 *   BENCH_AUTH_CALLERS    concurrent authenticate callers          (default 32)
 *
 * The PostgreSQL pool is BENCH_POOL, as in the other sections.
 */
import { Buffer } from "node:buffer";
import { randomBytes, scryptSync } from "node:crypto";
import type { EventMetadata } from "../../events/metadata.ts";
import { registerUser } from "../../src/auth/accounts.ts";
import { SCRYPT_PARAMS } from "../../src/auth/password.ts";
import { deriveJwtKey, signAccessToken, verifyAccessToken } from "../../src/auth/tokens.ts";
import { loadConfig } from "../../src/config.ts";
import { createLogger } from "../../src/logger.ts";
import { openRuntime, type Runtime } from "../../src/runtime.ts";
import { sql } from "../../src/store/sql.ts";
import {
  type BenchRow,
  envInt,
  fmtInt,
  fmtMs,
  fmtSec,
  percentile,
  perSec,
  type SectionDeps,
  type Timed,
  timed,
} from "./stats.ts";
import { PASSWORD } from "../support/users.ts";

const cfg = {
  // scrypt makes a login cost ~1/3 s: 24 keeps the section under a minute on 2 cores
  logins: envInt("BENCH_LOGINS", 24),
  loginClients: envInt("BENCH_LOGIN_CLIENTS", 8),
  jwtVerifies: envInt("BENCH_JWT_VERIFIES", 20_000),
  auths: envInt("BENCH_AUTHS", 5000),
  authCallers: envInt("BENCH_AUTH_CALLERS", 32),
};

const META: EventMetadata = { ip: "127.0.0.1", userAgent: "chartlog-bench/1" };

const report = (
  row: (r: BenchRow) => void,
  r: Omit<BenchRow, "m" | "impl">,
  t: Timed,
  unit: string,
) => {
  row({ ...r, impl: "Chartlog", m: { events: t.n, appends: 0, ms: t.ms, latencies: t.latencies } });
  const rate = perSec(t);
  console.log(
    `  ${r.backend} ${r.workload}: ${rate < 100 ? rate.toFixed(2) : fmtInt(rate)} ${unit}/s, ` +
      `p50 ${fmtMs(percentile(t.latencies, 0.5))} ms, p99 ${
        fmtMs(percentile(t.latencies, 0.99))
      } ms (${fmtSec(t.ms)})`,
  );
};

/** The claims part of a JWT, unchecked (the bench only wants `sid`, to check actors). */
const sidOf = (token: string): string =>
  JSON.parse(atob(token.split(".")[1]!.replaceAll("-", "+").replaceAll("_", "/"))).sid;

/**
 * A stored hash in hashPassword's format but with N=2, r=1, p=1: a login
 * against it does everything a real one does except the scrypt work.
 */
const cheapHash = (password: string): string => {
  const b64 = (b: Uint8Array) => Buffer.from(b).toString("base64").replace(/=+$/, "");
  const salt = randomBytes(16);
  const key = scryptSync(password.normalize("NFKC"), salt, 32, { N: 2, r: 1, p: 1 });
  return `scrypt$N=2,r=1,p=1$${b64(salt)}$${b64(key)}`;
};

/** HS256 access-token verification alone: no database. */
const jwtWorkload = async (row: (r: BenchRow) => void) => {
  const key = await deriveJwtKey(crypto.getRandomValues(new Uint8Array(32)));
  const now = new Date();
  const token = await signAccessToken(
    key,
    { sub: crypto.randomUUID(), role: "practitioner", sid: crypto.randomUUID(), amr: ["pwd"] },
    900,
    now,
  );
  await timed(Math.min(1000, cfg.jwtVerifies), 1, () => verifyAccessToken(key, token, now));
  const jwt = await timed(cfg.jwtVerifies, 1, () => verifyAccessToken(key, token, now));
  report(
    row,
    {
      workload: `JWT verify x${fmtInt(cfg.jwtVerifies)}, sequential`,
      backend: "none (CPU)",
      latencyOf: "verifyAccessToken",
      note: "verifications/s; jose HS256 + iss/aud/exp checks, no DB",
    },
    jwt,
    "verifications",
  );
};

/** Logins and authenticate calls through one runtime. */
const runtimeWorkloads = async (
  runtime: Runtime,
  backend: string,
  poolNote: string,
  row: (r: BenchRow) => void,
) => {
  const { store, sessions } = runtime;
  const register = (email: string) =>
    registerUser(
      store,
      {
        email,
        name: "Bench user",
        role: "practitioner",
        password: PASSWORD,
        patientId: null,
      },
      { actorId: "bench-setup" },
      SCRYPT_PARAMS,
    );
  // One user per concurrent client, plus the control user; each costs a hash (untimed).
  const t0 = performance.now();
  const [cheap, ...users] = await Promise.all(
    Array.from({ length: cfg.loginClients + 1 }, (_, i) => register(`bench-${i}@clinic.test`)),
  );
  // The control user's stored hash costs nothing to check. This writes the
  // users projection's table directly, in this throwaway database only.
  await store.db.query(sql`update user_credentials set password_hash = ${cheapHash(PASSWORD)}
    where user_id = ${cheap!.id}::uuid`);
  console.log(
    `  registered ${users.length + 1} users in ${fmtSec(performance.now() - t0)} (untimed)`,
  );

  const tokens: { token: string; userId: string; sid: string }[] = [];
  const login = async (u: { id: string; email: string }) => {
    const pair = await sessions.login(u.email, PASSWORD, META);
    tokens.push({ token: pair.accessToken, userId: u.id, sid: sidOf(pair.accessToken) });
  };
  await login(cheap!); // untimed: first query plans, pool connections
  await login(users[0]!);

  const loginRow = (workload: string, t: Timed, note: string) =>
    report(row, { workload, backend, latencyOf: "login", note }, t, "logins");

  const control = await timed(cfg.logins, 1, () => login(cheap!));
  const controlP50 = percentile(control.latencies, 0.5);
  loginRow(
    `login x${fmtInt(cfg.logins)}, seq, N=2 hash`,
    control,
    "logins/s; control: the same login, scrypt made trivial (bench-only stored hash)",
  );

  const seq = await timed(cfg.logins, 1, () => login(users[0]!));
  const seqP50 = percentile(seq.latencies, 0.5);
  const { N, r, p } = SCRYPT_PARAMS;
  loginRow(
    `login x${fmtInt(cfg.logins)}, sequential`,
    seq,
    `logins/s; scrypt N=2^${Math.log2(N)},r=${r},p=${p} dominates: ` +
      `~${Math.round((100 * (seqP50 - controlP50)) / seqP50)}% of p50`,
  );

  // each client logs in as its own user, one login at a time
  const cores = navigator.hardwareConcurrency;
  const conc = await timed(cfg.logins, cfg.loginClients, (i) => login(users[i % users.length]!));
  loginRow(
    `login x${fmtInt(cfg.logins)}, ${cfg.loginClients} clients`,
    conc,
    `logins/s; scrypt-bound: ${cfg.loginClients} hashes share ${cores} cores ` +
      `(ceiling ~${(cores / (seqP50 / 1000)).toFixed(1)}/s)`,
  );

  // every session opened above, its access token round robin
  let bad = 0;
  const authOnce = async (i: number) => {
    const t = tokens[i % tokens.length]!;
    const actor = await sessions.authenticate(t.token);
    if (actor.userId !== t.userId || actor.sessionId !== t.sid) bad++;
  };
  await timed(cfg.authCallers * 10, cfg.authCallers, authOnce); // untimed warm-up
  bad = 0;
  const auth = await timed(cfg.auths, cfg.authCallers, authOnce);
  report(
    row,
    {
      workload: `authenticate x${fmtInt(cfg.auths)}, ${cfg.authCallers} callers`,
      backend,
      latencyOf: "authenticate",
      note: `calls/s; JWT + 1 query, ${tokens.length} sessions, ${poolNote}; ` +
        (bad === 0 ? "all actors ok" : `${bad} WRONG ACTORS`),
    },
    auth,
    "calls",
  );
};

const open = async (deps: SectionDeps, databaseUrl: string): Promise<Runtime> => {
  const config = loadConfig({
    DATABASE_URL: databaseUrl,
    CHARTLOG_MASTER_KEY: btoa(String.fromCharCode(...crypto.getRandomValues(new Uint8Array(32)))),
    CHARTLOG_ENV: "test",
    CHARTLOG_DB_POOL_MAX: String(deps.pool),
    LOG_LEVEL: "silent",
  });
  const runtime = await openRuntime(config, createLogger("silent"), { workers: false });
  deps.defer("close auth runtime", () => runtime.close());
  return runtime;
};

/** The auth section: JWT verification alone, then logins and authenticate on each backend. */
export const authBench = async (deps: SectionDeps): Promise<void> => {
  console.log(JSON.stringify(cfg));
  await jwtWorkload(deps.add);

  console.log("\n[Auth on PostgreSQL]");
  await deps.scoped(async () => {
    const runtime = await open(deps, await deps.newPgDatabase());
    await runtimeWorkloads(runtime, "PostgreSQL", `pool ${deps.pool}`, deps.add);
  });

  console.log("\n[Auth on PGlite (memory)]");
  await deps.scoped(async () => {
    const runtime = await open(deps, "memory://");
    await runtimeWorkloads(runtime, "PGlite", "one connection", deps.add);
  });
};
