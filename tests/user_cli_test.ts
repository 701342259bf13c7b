import assert from "node:assert/strict";
import { currentCode } from "../src/auth/mfa.ts";
import { sql } from "../src/store/sql.ts";
import { openTestApp } from "./support/app.ts";
import { keyEnv, runCli } from "./support/cli.ts";
import { createTestDatabase, postgresAvailable } from "./support/harness.ts";
import { bearer, createCheapUser, login } from "./support/users.ts";

/** `deno task user …` with a first line on standard input. */
const withStdin = async (args: string[], env: Record<string, string>, stdin: string) => {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", new URL("../src/cli/user.ts", import.meta.url).pathname, ...args],
    env: { LOG_LEVEL: "warn", ...env },
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const w = child.stdin.getWriter();
  await w.write(new TextEncoder().encode(stdin));
  await w.close();
  const out = await child.output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
};

Deno.test("user CLI: --help and bad usage need no database", async () => {
  const env = {};
  const [help, subHelp, unknownOption, unknownCommand, noOperator, positional] = await Promise.all([
    runCli("user.ts", ["--help"], env),
    runCli("user.ts", ["reset-password", "--help"], env),
    runCli("user.ts", ["unlock", "--email", "a@b.c", "--frobnicate"], env),
    runCli("user.ts", ["promote"], env),
    runCli("user.ts", ["unlock", "--email", "a@b.c", "--reason", "r"], env),
    runCli("user.ts", ["reset-mfa", "stray"], env),
  ]);
  assert.equal(help.code, 0, help.stderr);
  for (const c of ["create", "unlock", "reset-password", "reset-mfa"]) {
    assert.match(help.stdout, new RegExp(`^  ${c} `, "m"));
  }
  assert.equal(subHelp.code, 0);
  assert.match(subHelp.stdout, /--operator/);
  assert.match(subHelp.stdout, /--reason/);
  assert.equal(unknownOption.code, 2);
  assert.match(unknownOption.stderr, /Unknown option '--frobnicate'/);
  assert.ok(!unknownOption.stderr.includes("    at "), "no stack trace");
  assert.equal(unknownCommand.code, 2);
  assert.match(unknownCommand.stderr, /unknown command promote/);
  assert.equal(noOperator.code, 2);
  assert.match(noOperator.stderr, /missing --operator/);
  assert.equal(positional.code, 2);
});

Deno.test({
  name: "user CLI: unlock, reset-password and reset-mfa are events naming the admin operator",
  ignore: !(await postgresAvailable()),
  fn: async () => {
    const db = await createTestDatabase({ app: true });
    const env = {
      DATABASE_URL: db.url,
      CHARTLOG_MASTER_KEY: keyEnv(crypto.getRandomValues(new Uint8Array(32))),
    };
    const t = await openTestApp({ ...env, CHARTLOG_LOGIN_RATE_PER_MIN: "1000" });
    try {
      const admin = await createCheapUser(t.runtime, "admin");
      const nurse = await createCheapUser(t.runtime, "practitioner");
      const act = (cmd: string, operator = admin.email) => [
        cmd,
        "--email",
        nurse.email,
        "--operator",
        operator,
        "--reason",
        "called from the ward phone",
      ];
      for (let i = 0; i < 5; i++) await login(t.app, nurse.email, "not the password at all");
      assert.equal((await login(t.app, nurse.email)).res.status, 401, "locked");

      // the operator must be an admin account that exists
      const [asNurse, asNobody] = await Promise.all([
        runCli("user.ts", act("unlock", nurse.email), env),
        runCli("user.ts", act("unlock", "nobody@clinic.test"), env),
      ]);
      assert.equal(asNurse.code, 1);
      assert.match(asNurse.stderr, /operator must be the email of an active admin/);
      assert.equal(asNobody.code, 1);
      assert.equal((await login(t.app, nurse.email)).res.status, 401, "still locked");

      const unlocked = await runCli("user.ts", act("unlock"), env);
      assert.equal(unlocked.code, 0, unlocked.stderr);
      const session = await login(t.app, nurse.email);
      assert.equal(session.res.status, 200);
      const authEvents = await t.runtime.store.readStream(`auth-${nurse.id}`);
      const unlock = authEvents.find((e) => e.type === "AccountUnlocked")!;
      assert.deepEqual(unlock.data, {
        userId: nurse.id,
        operatorId: admin.id,
        reason: "called from the ward phone",
      });
      assert.equal(unlock.metadata.actorId, admin.id);
      assert.equal((await runCli("user.ts", act("unlock"), env)).code, 1, "not locked any more");

      // reset-password: the new one works, the old one and the old sessions do not
      const weak = await withStdin(act("reset-password"), env, "short\n");
      assert.equal(weak.code, 1);
      const reset = await withStdin(act("reset-password"), env, "a fresh passphrase here\n");
      assert.equal(reset.code, 0, reset.stderr);
      assert.ok(!reset.stdout.includes("fresh passphrase"));
      const me = await t.app.request("/v1/me", { headers: bearer(session.body.accessToken) });
      assert.equal(me.status, 401, "sessions end with the reset");
      assert.equal((await login(t.app, nurse.email)).res.status, 401);
      const fresh = await login(t.app, nurse.email, "a fresh passphrase here");
      assert.equal(fresh.res.status, 200);
      const [pw] = await t.runtime.store.readStream(`user-${nurse.id}`).then((evs) =>
        evs.filter((e) => e.type === "UserPasswordReset")
      );
      assert.equal(pw!.data.operatorId, admin.id);
      assert.equal(pw!.data.reason, "called from the ward phone");

      // reset-mfa: a lost authenticator; the next login needs the password only
      const token = fresh.body.accessToken;
      const post = (path: string, body?: unknown) =>
        t.app.request(path, {
          method: "POST",
          headers: { ...bearer(token), "content-type": "application/json" },
          ...(body ? { body: JSON.stringify(body) } : {}),
        });
      const { secret } = await (await post("/v1/me/mfa/totp")).json();
      const confirmed = await post("/v1/me/mfa/totp/confirm", {
        code: currentCode(secret, new Date()),
      });
      assert.equal(confirmed.status, 200);
      const needsCode = await login(t.app, nurse.email, "a fresh passphrase here");
      assert.equal(needsCode.body.type, "/problems/mfa-required");
      const mfa = await runCli("user.ts", act("reset-mfa"), env);
      assert.equal(mfa.code, 0, mfa.stderr);
      assert.equal((await login(t.app, nurse.email, "a fresh passphrase here")).res.status, 200);
      assert.equal((await runCli("user.ts", act("reset-mfa"), env)).code, 1, "nothing to reset");
      const [m] = await t.runtime.db.query<{ actor: string; operator: string }>(
        sql`select metadata->>'actorId' as actor, data->>'operatorId' as operator
          from events where type = 'MfaReset'`,
      );
      assert.deepEqual(m, { actor: admin.id, operator: admin.id });
    } finally {
      await t.close();
      await db.drop();
    }
  },
});
