/**
 * The real server process (started as `deno task start` starts it) on a real
 * PostgreSQL that is first unreachable, then comes up, then loses its
 * connections: the process stays up, answers 503 (never 500) while the
 * database is away, serves again afterwards, and drains on SIGTERM.
 */
import assert from "node:assert/strict";
import postgres from "postgres";
import { loadConfig } from "../src/config.ts";
import { createLogger } from "../src/logger.ts";
import { openRuntime } from "../src/runtime.ts";
import { UnavailableError } from "../src/errors.ts";
import { problemFor } from "../src/http/problem.ts";
import { mapConnectionError } from "../src/store/db.ts";
import { openTestApp } from "./support/app.ts";
import { bearer, createUser, login } from "./support/users.ts";
import { createTestDatabase, PG_ADMIN_URL, postgresAvailable } from "./support/harness.ts";
import {
  denoNotice,
  freePort,
  parseLine,
  type ServerProcess,
  startServer,
  waitForStatus,
} from "./support/server.ts";

const SECRET = "s3cret-in-the-url";

/** Forwards a local port to PostgreSQL: the "database" the server sees comes up when this starts. */
const tcpProxy = (port: number, target: { hostname: string; port: number }) => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port });
  const conns = new Set<Deno.Conn>();
  const served = (async () => {
    for await (const conn of listener) {
      conns.add(conn);
      Deno.connect(target).then((up) => {
        conns.add(up);
        const close = () => {
          for (const c of [conn, up]) {
            try {
              c.close();
            } catch {
              // closed already
            }
            conns.delete(c);
          }
        };
        Promise.allSettled([
          conn.readable.pipeTo(up.writable),
          up.readable.pipeTo(conn.writable),
        ]).then(close);
      }, () => conn.close());
    }
  })().catch(() => {});
  return {
    close: async () => {
      listener.close();
      for (const c of conns) {
        try {
          c.close();
        } catch {
          // closed already
        }
      }
      await served;
    },
  };
};

const problemOf = async (res: Response) => {
  assert.equal(res.headers.get("content-type"), "application/problem+json");
  return await res.json();
};

/** A failed login: unauthenticated, appends a LoginFailed event, and runs the password check. */
const failedLogin = (server: ServerProcess) =>
  fetch(`${server.url}/v1/auth/login`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ email: `nobody-${crypto.randomUUID()}@clinic.test`, password: "x" }),
  });

const streamSummary = async (server: ServerProcess) => {
  const res = await fetch(`${server.url}/ready`);
  if (res.status !== 200) {
    await res.body?.cancel();
    return null;
  }
  const body = await res.json();
  return body.projections.find((p: { name: string }) => p.name === "stream_summary") as {
    position: number;
    lag: number;
  };
};

/** Opens a POST whose JSON body arrives in two parts; `finish` sends the rest and reads the answer. */
const halfSentPost = async (
  server: ServerProcess,
  path: string,
  json: unknown,
  headers: Record<string, string>,
) => {
  const body = new TextEncoder().encode(JSON.stringify(json));
  const requestId = `half-sent-${crypto.randomUUID()}`;
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
  const head = `POST ${path} HTTP/1.1\r\nhost: 127.0.0.1\r\nx-request-id: ${requestId}\r\n` +
    Object.entries(headers).map(([k, v]) => `${k}: ${v}\r\n`).join("") +
    `content-type: application/json\r\ncontent-length: ${body.length}\r\n\r\n`;
  const w = conn.writable.getWriter();
  await w.write(new TextEncoder().encode(head));
  await w.write(body.subarray(0, 10));
  return {
    requestId,
    finish: async (): Promise<{ status: number; body: Record<string, unknown> }> => {
      await w.write(body.subarray(10));
      // read until the response is complete (the server may keep the connection open)
      const reader = conn.readable.getReader();
      let text = "";
      const decoder = new TextDecoder();
      for (;;) {
        const end = text.indexOf("\r\n\r\n");
        if (end >= 0) {
          const len = /content-length: (\d+)/i.exec(text.slice(0, end));
          if (len && text.length >= end + 4 + Number(len[1])) break;
        }
        const { done, value } = await reader.read();
        if (done) break;
        text += decoder.decode(value, { stream: true });
      }
      reader.releaseLock();
      w.releaseLock();
      conn.close();
      const m = /^HTTP\/1\.1 (\d{3})[^]*?\r\n\r\n([^]*)$/.exec(text);
      assert.ok(m, `not a complete HTTP response: ${JSON.stringify(text.slice(0, 200))}`);
      return { status: Number(m[1]), body: JSON.parse(m[2]!) };
    },
  };
};

const patient = () => ({
  mrn: `MRN-${crypto.randomUUID().slice(0, 8)}`,
  firstName: "Ada",
  lastName: "Lovelace",
  dateOfBirth: "1990-12-10",
  gender: "F",
});

Deno.test("server process: waits for an unreachable database, survives losing its connections, drains on SIGTERM", async () => {
  if (!(await postgresAvailable())) return;
  const tdb = await createTestDatabase({ app: true });
  const dir = await Deno.makeTempDir({ prefix: "chartlog-avail-" });
  const admin = postgres(PG_ADMIN_URL, { max: 1, onnotice: () => {} });
  const dbName = new URL(tdb.url).pathname.slice(1);
  const pg = new URL(PG_ADMIN_URL);
  const dbPort = freePort(); // nothing listens there until the proxy starts
  const url = new URL(tdb.url);
  url.port = String(dbPort);
  url.password = SECRET; // trust auth ignores it; it must never reach the log
  const env = {
    CHARTLOG_MASTER_KEY: btoa(String.fromCharCode(...crypto.getRandomValues(new Uint8Array(32)))),
    CHARTLOG_DATA_DIR: `${dir}/data`,
    CHARTLOG_MFA_REQUIRED_ROLES: "none",
  };
  let proxy: { close(): Promise<void> } | null = null;
  let server: ServerProcess | null = null;
  try {
    server = await startServer({
      ...env,
      DATABASE_URL: url.toString(),
      CHARTLOG_SHUTDOWN_TIMEOUT_S: "30",
      LOG_LEVEL: "debug", // "request received": the drain below waits for those
    }, dir);
    const s = server;
    const t0 = performance.now();
    const phase = (name: string) =>
      console.log(`${name}: ${Math.round(performance.now() - t0)} ms`);

    // 3. the database is not there: live, not ready, API routes 503 with Retry-After
    await waitForStatus(s, "/health", 200);
    await s.waitForLog((l) => l.msg === "the database is unreachable; retrying" && l.attempt === 2);
    const notReady = await fetch(`${s.url}/ready`);
    assert.equal(notReady.status, 503);
    assert.ok(notReady.headers.get("retry-after"));
    assert.equal((await problemOf(notReady)).type, "/problems/unavailable");
    const early = await failedLogin(s);
    assert.equal(early.status, 503);
    assert.ok(early.headers.get("retry-after"));
    assert.equal((await problemOf(early)).type, "/problems/unavailable");
    assert.equal(s.exited, false);
    phase("unreachable checked");

    // ...then it comes up, and the server opens it on its next attempt
    proxy = tcpProxy(dbPort, { hostname: pg.hostname, port: Number(pg.port || 5432) });
    await waitForStatus(s, "/ready", 200);
    const active = await s.waitForLog((l) => l.msg === "projection worker active");
    const setup = await openRuntime(
      loadConfig({ ...env, DATABASE_URL: tdb.url, LOG_LEVEL: "silent" }),
      createLogger("silent"),
      { workers: false },
    );
    const ops = await createUser(setup, "clinical_ops").finally(() => setup.close());
    const { body: tokens } = await login(
      { request: (path, init) => fetch(s.url + path, init) },
      ops.email,
    );
    const auth = { authorization: `Bearer ${tokens.accessToken}` };
    const register = () =>
      fetch(`${s.url}/v1/patients`, {
        method: "POST",
        headers: { ...auth, "content-type": "application/json" },
        body: JSON.stringify(patient()),
      });
    /**
     * Registers until `n` are acknowledged. The database is shared with other
     * test runs, some of which terminate backends: a 503 may come from them.
     */
    const registered = async (n: number) => {
      for (let i = 0, ok = 0; ok < n; i++) {
        assert.ok(i < 100, "registrations keep failing");
        const res = await register();
        assert.ok(res.status === 201 || res.status === 503, String(res.status));
        if (res.status === 201) ok++;
        await res.body?.cancel();
      }
    };
    phase("ready");

    // 1. lose connections while requests (each an append and a read) run
    let running = true;
    const statuses: number[] = [];
    const fetchErrors: string[] = [];
    const load = Promise.all(Array.from({ length: 4 }, async () => {
      while (running) {
        try {
          const res = await register();
          statuses.push(res.status);
          if (res.status === 503) assert.ok(res.headers.get("retry-after"));
          await res.body?.cancel();
        } catch (err) {
          if (s.exited) {
            throw new Error(
              `the server exited; its last output:\n${
                [...s.stdout.slice(-20), ...s.stderr.slice(-40)].join("\n")
              }`,
              { cause: err },
            );
          }
          statuses.push(0); // a connection error counts against the server below
          const cause = (err as { cause?: unknown }).cause;
          fetchErrors.push(
            `${Math.round(performance.now() - t0)} ms: ${err}${cause ? ` (${cause})` : ""}`,
          );
        }
      }
    }));
    // awaited below; until then a rejection (the server exited) must not count as unhandled
    load.catch(() => {});
    const more = async (n: number) => {
      const target = statuses.length + n;
      while (statuses.length < target && !s.exited) await new Promise((r) => setTimeout(r, 10));
    };
    try {
      await more(20);
      // the backend that holds the worker's advisory lock
      const [worker] = await admin`select pg_terminate_backend(a.pid) as ok
        from pg_stat_activity a where a.datname = ${dbName} and exists (
          select 1 from pg_locks l where l.pid = a.pid and l.locktype = 'advisory')`;
      assert.equal(worker?.ok, true);
      const lost = await s.waitForLog(
        (l) => l.msg === "projection worker lost its database connection and its lock",
        active,
      );
      await s.waitForLog((l) => l.msg === "projection worker active", lost);
      // then every backend of the app's database, twice
      for (let i = 0; i < 2; i++) {
        await more(20);
        await admin`select pg_terminate_backend(pid) from pg_stat_activity
          where datname = ${dbName} and pid <> pg_backend_pid()`;
      }
      await more(40);
    } finally {
      running = false;
      await load;
    }
    phase("connections lost and back");
    assert.equal(s.exited, false, "the server died");
    assert.deepEqual(
      [...new Set(statuses)].filter((x) => x !== 201 && x !== 503),
      [],
      `answers other than 201 and 503; connection errors: ${
        [...new Set(fetchErrors)].slice(0, 10).join("; ")
      } (${fetchErrors.length} in all); the server's last output:\n${
        [...s.stdout.slice(-30), ...s.stderr.slice(-40)].join("\n")
      }`,
    );

    // the projection catches up with new events
    await waitForStatus(s, "/ready", 200);
    const before = (await streamSummary(s))!;
    await registered(3);
    for (let i = 0; i < 1200; i++) {
      const now = await streamSummary(s);
      if (now && now.lag === 0 && now.position >= before.position + 3) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    const caughtUp = (await streamSummary(s))!;
    assert.equal(caughtUp.lag, 0);
    assert.ok(caughtUp.position >= before.position + 3);
    phase("caught up");

    // 3. the database goes away after start-up (a restart): 503, then served again
    await proxy.close();
    proxy = null;
    for (const res of [await register(), await fetch(`${s.url}/ready`)]) {
      assert.equal(res.status, 503);
      assert.ok(res.headers.get("retry-after"));
      assert.equal((await problemOf(res)).type, "/problems/unavailable");
    }
    proxy = tcpProxy(dbPort, { hostname: pg.hostname, port: Number(pg.port || 5432) });
    await waitForStatus(s, "/ready", 200);
    await registered(1);
    phase("database restarted");

    // 4. SIGTERM: requests in flight finish, new ones are turned away, then connections refused
    const inFlight = await Promise.all(
      Array.from({ length: 3 }, () => halfSentPost(s, "/v1/patients", patient(), auth)),
    );
    // the server has accepted all three (under load it may parse their headers late; a
    // request it had not accepted by the signal is a new one, rightly turned away)
    const accepted = () =>
      s.stdout.map(parseLine).filter((l) =>
        l?.msg === "request received" && l.method === "POST" &&
        inFlight.some((r) => r.requestId === l.requestId)
      ).length;
    for (let i = 0; i < 1200 && accepted() < 3; i++) {
      await new Promise((r) => setTimeout(r, 50));
    }
    assert.equal(accepted(), 3, "the server accepted the three requests in flight");
    const mark = s.stdout.length;
    s.child.kill("SIGTERM");
    await s.waitForLog((l) => l.msg === "shutting down", mark);
    const turnedAway = await fetch(`${s.url}/health`);
    assert.equal(turnedAway.status, 503);
    assert.equal((await problemOf(turnedAway)).type, "/problems/unavailable");
    assert.equal(s.exited, false, "exited with requests in flight");
    const answers = Promise.all(inFlight.map((r) => r.finish()));
    let refused = false;
    for (let i = 0; i < 400 && !refused; i++) {
      try {
        const res = await fetch(`${s.url}/health`);
        await res.body?.cancel();
        await new Promise((r) => setTimeout(r, 25));
      } catch {
        refused = true;
      }
    }
    assert.ok(refused, "new connections are still accepted after SIGTERM");
    const results = await answers;
    assert.equal((await s.status).code, 0);
    await s.kill(); // the whole log is read: a request's lines may come after its answer
    const unavailable = new Map(
      s.stdout.map(parseLine).filter((l) => l?.msg === "unavailable").map((l) => [
        l!.requestId,
        (l!.err as { code?: string }).code,
      ]),
    );
    for (const r of results) {
      if (r.status === 503) {
        // only a connection lost from outside (the restarts above can leave a pooled socket
        // dead, or another test run on this server terminates backends) may fail a request in
        // flight, and its error has a connection code; never this server's own shutdown
        // ("the database is closed", no code) nor the drain turning it away (no such line)
        assert.match(
          String(unavailable.get(r.body.requestId)),
          /^(57P0\d|08\w{3}|CONNECT\w+|ECONN\w+|EPIPE)$/,
          `${JSON.stringify(r.body)}\n${
            s.stdout.filter((l) => l.includes(String(r.body.requestId))).join("\n")
          }`,
        );
        continue;
      }
      assert.equal(r.status, 201, JSON.stringify(r.body));
      assert.equal(typeof r.body.id, "string");
    }
    phase("drained");

    // the log: JSON lines only, no password
    const lines = s.stdout.filter((l) => l.trim() !== "");
    assert.deepEqual(lines.filter((l) => !parseLine(l)), []);
    assert.deepEqual(s.stderr.filter((l) => !denoNotice(l) && !parseLine(l)), []);
    assert.equal(parseLine(lines.at(-1)!)?.msg, "stopped");
    assert.ok(![...s.stdout, ...s.stderr].some((l) => l.includes(SECRET)));
    // every registration acknowledged (201) is in the log
    const appDb = postgres(tdb.url, { max: 1, onnotice: () => {} });
    const [row] = await appDb`select count(*)::int as n,
        array_agg(distinct metadata->>'ip') as ips from events
      where type = 'PatientRegistered'`.finally(() => appDb.end());
    // the socket peer reaches the handlers (the audit trail's "from where", the rate limit's key)
    assert.deepEqual(row!.ips, ["127.0.0.1"]);
    const acknowledged = statuses.filter((x) => x === 201).length + 3 + 1 +
      (await answers).filter((r) => r.status === 201).length;
    assert.ok(row!.n >= acknowledged, `${row!.n} events, ${acknowledged} acknowledged`);
  } finally {
    await server?.kill();
    await proxy?.close();
    await admin.end();
    await tdb.drop();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("unavailable: a closed embedded database is 503 with Retry-After, not 500", async () => {
  const t = await openTestApp({ CHARTLOG_LOGIN_RATE_PER_MIN: "1000" });
  try {
    const u = await createUser(t.runtime, "clinical_ops");
    const { body: tokens } = await login(t.app, u.email);
    await t.runtime.db.close();
    for (
      const res of [
        await login(t.app, u.email).then((r) => r.res),
        await t.app.request("/v1/patients", { headers: bearer(tokens.accessToken) }),
        await t.app.request("/ready"),
      ]
    ) {
      assert.equal(res.status, 503);
      assert.equal(res.headers.get("retry-after"), "5");
      assert.equal(res.headers.get("content-type"), "application/problem+json");
    }
    assert.ok(!t.logs.lines.some((l) => l.msg === "unhandled error"));
  } finally {
    await t.close().catch(() => {});
  }
});

Deno.test("unavailable: connection errors of either driver map to UnavailableError, others do not", () => {
  const coded = (code: string) => Object.assign(new Error("x"), { code });
  for (
    const code of [
      "ECONNREFUSED",
      "ECONNRESET",
      "CONNECTION_CLOSED",
      "CONNECTION_ENDED",
      "CONNECTION_DESTROYED",
      "CONNECT_TIMEOUT",
      "57P01",
      "57P03",
      "08006",
      "08001",
      "53300",
    ]
  ) {
    const mapped = mapConnectionError(coded(code));
    assert.ok(mapped instanceof UnavailableError, code);
    assert.equal(mapped.code, code);
    assert.equal(problemFor(mapped).headers?.["Retry-After"], "5");
  }
  assert.ok(mapConnectionError(new Error("PGlite is closed")) instanceof UnavailableError);
  for (const code of ["23505", "22P02", "42P01", "28P01"]) {
    assert.ok(!(mapConnectionError(coded(code)) instanceof UnavailableError), code);
  }
});
