import assert from "node:assert/strict";
import { erasePatient } from "../src/clinical/erasure.ts";
import { sql } from "../src/store/sql.ts";
import { openTestApp } from "./support/app.ts";
import { keyEnv, runCli } from "./support/cli.ts";
import { createTestDatabase, postgresAvailable } from "./support/harness.ts";
import { bearer, createUser, login } from "./support/users.ts";

const REASON = "Found unconscious, needs allergy list";
/** The database refuses access events (a real failure, not a stub). */
const NO_ACCESS_EVENTS = `create function no_access() returns trigger language plpgsql as $$
  begin if new.stream_id like 'access-%' then raise exception 'audit store down'; end if;
  return new; end $$;
  create trigger no_access before insert on events for each row execute function no_access();`;

/**
 * A record with a history (registered, care team, a read, a break-glass and
 * a read through it, a refusal), written by the app, then replayed by the
 * CLI as a separate process on the same database and master key.
 */
Deno.test("audit replay: a readable, audited timeline; PHI unsealed, then [erased]; usage errors", async () => {
  // PostgreSQL when there is one (a PGlite directory takes seconds to initialise)
  const pg = (await postgresAvailable()) ? await createTestDatabase({ app: true }) : null;
  const dataDir = await Deno.makeTempDir({ prefix: "chartlog_replay_" });
  const env = {
    CHARTLOG_DATA_DIR: dataDir,
    CHARTLOG_MASTER_KEY: keyEnv(crypto.getRandomValues(new Uint8Array(32))),
    DATABASE_URL: pg ? pg.url : `pglite://${dataDir}`,
    CHARTLOG_ENV: "test",
  };
  try {
    const t = await openTestApp({ ...env, CHARTLOG_LOGIN_RATE_PER_MIN: "10000" });
    let p = "";
    let grantId = "";
    const ids: Record<string, string> = {};
    try {
      const tokens: Record<string, string> = {};
      for (
        const [who, role] of [
          ["admin", "admin"],
          ["doc", "practitioner"],
          ["er", "practitioner"],
          ["stranger", "practitioner"],
          ["auditor", "auditor"],
          ["clerk", "reception"],
        ] as const
      ) {
        const u = await createUser(t.runtime, role, `${who}@clinic.test`);
        ids[who] = u.id;
        tokens[who] = (await login(t.app, u.email)).body.accessToken;
      }
      const call = async (who: string, method: string, path: string, body?: unknown) => {
        const res = await t.app.request(path, {
          method,
          headers: {
            ...bearer(tokens[who]!),
            ...(body === undefined ? {} : { "content-type": "application/json" }),
          },
          ...(body === undefined ? {} : { body: JSON.stringify(body) }),
        });
        return { status: res.status, body: await res.json() };
      };
      const reg = await call("admin", "POST", "/v1/patients", {
        mrn: "AQ-1",
        firstName: "Ada",
        lastName: "Quill",
        dateOfBirth: "1970-02-03",
        gender: "F",
      });
      assert.equal(reg.status, 201);
      p = reg.body.id;
      assert.equal(
        (await call("admin", "POST", `/v1/patients/${p}/care-team`, { practitionerId: ids.doc }))
          .status,
        201,
      );
      assert.equal((await call("doc", "GET", `/v1/patients/${p}`)).status, 200);
      const bg = await call("er", "POST", `/v1/patients/${p}/break-glass`, { reason: REASON });
      assert.equal(bg.status, 201);
      grantId = bg.body.grantId;
      assert.equal((await call("er", "GET", `/v1/patients/${p}`)).status, 200);
      assert.equal((await call("stranger", "GET", `/v1/patients/${p}`)).status, 403);
      assert.equal(
        (await call("admin", "PATCH", `/v1/patients/${p}`, { lastName: "Byron" })).status,
        200,
      );
    } finally {
      await t.close();
    }

    const replay = (args: string[]) => runCli("audit.ts", ["replay", ...args], env);
    const [help, badId, noOperator, badTime, unknownOp, notAuditor, unknownPatient] = await Promise
      .all([
        replay(["--help"]),
        replay(["--patient", "nope", "--operator", "auditor@clinic.test"]),
        replay(["--patient", p]),
        replay(["--patient", p, "--operator", "auditor@clinic.test", "--from", "yesterday"]),
        replay(["--patient", p, "--operator", "nobody@clinic.test"]),
        replay(["--patient", p, "--operator", "clerk@clinic.test"]),
        replay(["--patient", crypto.randomUUID(), "--operator", "auditor@clinic.test"]),
      ]);
    assert.equal(help.code, 0);
    assert.ok(help.stdout.startsWith("usage: deno task audit replay"), help.stdout);
    for (
      const [r, pattern] of [
        [badId, /^audit: --patient must be a uuid \(see: deno task audit --help\)$/],
        [noOperator, /^audit: --operator is required/],
        [badTime, /^audit: --from must be an ISO 8601 time/],
      ] as const
    ) {
      assert.equal(r.code, 2, r.stderr);
      assert.equal(r.stdout, "");
      const lines = r.stderr.trim().split("\n").filter((l) => !/warning|│|╭|╰/i.test(l));
      assert.equal(lines.length, 1, r.stderr);
      assert.match(lines[0]!, pattern);
    }
    for (const r of [unknownOp, notAuditor]) {
      assert.equal(r.code, 1, r.stderr);
      assert.match(r.stderr, /the operator must be the email of an active admin or auditor/);
      assert.equal(r.stdout, "");
    }
    assert.equal(unknownPatient.code, 1);
    assert.match(unknownPatient.stderr, /no such patient/);

    // the timeline, PHI unsealed
    const r = await replay(["--patient", p, "--operator", "auditor@clinic.test"]);
    assert.equal(r.code, 0, r.stderr);
    const lines = r.stdout.trimEnd().split("\n");
    const [, count] = /^patient [0-9a-f-]{36}: (\d+) events$/.exec(lines[0]!) ?? [];
    assert.equal(Number(count), lines.length - 1, r.stdout);
    const find = (re: RegExp) => {
      const l = lines.find((x) => re.test(x));
      assert.ok(l, `${re}\n${r.stdout}`);
      return l;
    };
    find(
      /PatientRegistered .*Test admin \(admin\).*registered Ada Quill, born 1970-02-03, MRN AQ-1/,
    );
    find(/CareTeamMemberAdded .*care team: added Test practitioner/);
    find(
      new RegExp(`BreakGlassUsed .*break-glass: ${REASON}.*\\[break-glass; grant ${grantId}\\]`),
    );
    const erRead = lines.filter((l) => / PatientViewed /.test(l) && l.includes("[break-glass"));
    assert.equal(erRead.length, 1, r.stdout);
    find(/AccessDenied .*DENIED patient\.read/);
    find(/PatientUpdated .*changed lastName=Byron/);
    // oldest first
    const times = lines.slice(1).map((l) => l.split("  ")[0]!);
    assert.deepEqual(times, [...times].sort());

    // the replay is on record before it was printed: the operator, the patient, the count
    const t2 = await openTestApp(env);
    try {
      const rows = await t2.runtime.db.query<{ data: unknown; metadata: { actorId: string } }>(
        sql`select data, metadata from events where stream_id = ${`access-${ids.auditor}`}
          and type = 'AuditQueried' order by global_position`,
      );
      assert.equal(rows.length, 1, "refused runs leave no read on record");
      assert.deepEqual(rows[0]!.data, {
        query: "replay",
        filters: { patientId: p },
        returned: Number(count),
      });
      assert.equal(rows[0]!.metadata.actorId, ids.auditor);
      await erasePatient(t2.runtime, p, "patient request", {
        actorId: ids.admin,
        actorRole: "admin",
      });
    } finally {
      await t2.close();
    }

    // after erasure: the facts stay, the PHI reads as [erased]; a window narrows it
    const erased = await replay(["--patient", p, "--operator", "admin@clinic.test"]);
    assert.equal(erased.code, 0, erased.stderr);
    for (const phi of ["Ada", "Quill", "Byron", "1970-02-03", "AQ-1", REASON]) {
      assert.ok(!erased.stdout.includes(phi), phi);
    }
    assert.match(
      erased.stdout,
      /registered \[erased\] \[erased\], born \[erased\], MRN \[erased\]/,
    );
    assert.match(erased.stdout, /break-glass: \[erased\]/);
    assert.match(erased.stdout, /changed \[erased\]/);
    // the auditor's replay is in the timeline too (an audit use naming the patient)
    assert.match(erased.stdout, /AuditQueried .*Test auditor \(auditor\).*audit query \(replay\)/);
    const none = await replay([
      "--patient",
      p,
      "--operator",
      "admin@clinic.test",
      "--to",
      "2000-01-01T00:00:00Z",
    ]);
    assert.equal(none.code, 0, none.stderr);
    assert.equal(none.stdout.trim(), `patient ${p}: 0 events to 2000-01-01T00:00:00.000Z`);

    // fail-closed: when the log refuses the audit event, nothing is printed
    const t3 = await openTestApp(env);
    try {
      await t3.runtime.db.exec(NO_ACCESS_EVENTS);
    } finally {
      await t3.close();
    }
    const refused = await replay(["--patient", p, "--operator", "auditor@clinic.test"]);
    assert.equal(refused.code, 1, refused.stderr);
    assert.equal(refused.stdout, "");
    assert.match(refused.stderr, /^audit: the replay could not be recorded in the log/m);
  } finally {
    await pg?.drop();
    await Deno.remove(dataDir, { recursive: true });
  }
});
