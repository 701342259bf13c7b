import assert from "node:assert/strict";
import { keyEnv, runCli } from "./support/cli.ts";
import { createTestDatabase, postgresAvailable } from "./support/harness.ts";
import { projections } from "../projections/index.ts";
import { streamSummary } from "../projections/stream_summary.ts";
import { createLogger } from "../src/logger.ts";
import { projectionStatus, ProjectionWorker } from "../src/store/projection_engine.ts";
import { openTestApp } from "./support/app.ts";
import { createUser } from "./support/users.ts";

// Every `deno task` CLI but `user` (which parses its own subcommands).
const CLIS = ["migrate", "rebuild", "audit", "status", "gc"] as const;

/** Runs a CLI with its own empty data directory, to show whether it opened anything. */
const inEmptyDataDir = async (cli: string, args: string[]) => {
  const dataDir = await Deno.makeTempDir({ prefix: "chartlog_cli_" });
  try {
    const out = await runCli(`${cli}.ts`, args, { CHARTLOG_DATA_DIR: dataDir });
    const left = await Array.fromAsync(Deno.readDir(dataDir));
    return { ...out, left: left.map((e) => e.name) };
  } finally {
    await Deno.remove(dataDir, { recursive: true });
  }
};

Deno.test("cli: --help prints usage on stdout and exits 0 without opening the database", async () => {
  const runs = await Promise.all(CLIS.map(async (cli) => {
    // rebuild must not look for a projection named --help, nor gc collect anything
    return {
      cli,
      ...await inEmptyDataDir(cli, cli === "audit" ? ["verify", "--help"] : ["--help"]),
    };
  }));
  for (const r of runs) {
    assert.equal(r.code, 0, `${r.cli}: ${r.stderr}`);
    assert.ok(r.stdout.startsWith(`usage: deno task ${r.cli}`), `${r.cli}: ${r.stdout}`);
    assert.equal(r.stderr.trim().split("\n").filter((l) => !/warning|│|╭|╰/i.test(l)).join(""), "");
    assert.deepEqual(r.left, [], `${r.cli} opened the data directory`);
  }
  const short = await inEmptyDataDir("gc", ["-h"]);
  assert.equal(short.code, 0);
  assert.ok(short.stdout.startsWith("usage: deno task gc"));
});

Deno.test("cli: an unknown option is one line on stderr and exit 2, no stack trace", async () => {
  const runs = await Promise.all(CLIS.map(async (cli) => ({
    cli,
    ...await inEmptyDataDir(cli, cli === "audit" ? ["verify", "--bogus"] : ["--bogus"]),
  })));
  for (const r of runs) {
    assert.equal(r.code, 2, `${r.cli}: ${r.stdout}${r.stderr}`);
    assert.equal(r.stdout, "");
    const lines = r.stderr.trim().split("\n");
    assert.equal(lines.length, 1, `${r.cli}: ${r.stderr}`);
    assert.match(
      lines[0]!,
      new RegExp(`^${r.cli}: Unknown option '--bogus' \\(see: deno task ${r.cli} --help\\)$`),
    );
    assert.deepEqual(r.left, [], `${r.cli} opened the data directory`);
  }
});

Deno.test("cli: bad arguments name what is wrong in one line", async () => {
  const cases: [string, string[], RegExp][] = [
    ["gc", ["--grace-minutes", "soon"], /^gc: --grace-minutes must be a non-negative number/],
    ["gc", ["--grace-minutes"], /^gc: Option '--grace-minutes <value>' argument missing/],
    ["rebuild", [], /^rebuild: give one projection name, or --all/],
    ["rebuild", ["--all", "users"], /^rebuild: give one projection name, or --all/],
    ["audit", [], /^audit: a subcommand is required/],
    ["audit", ["verfy"], /^audit: unknown subcommand 'verfy'/],
    ["status", ["now"], /^status: Unexpected argument 'now'/],
  ];
  const runs = await Promise.all(cases.map(([cli, args]) => inEmptyDataDir(cli, args)));
  runs.forEach((r, i) => {
    const [cli, args, pattern] = cases[i]!;
    assert.equal(r.code, 2, `${cli} ${args.join(" ")}: ${r.stderr}`);
    assert.equal(r.stderr.trim().split("\n").length, 1, r.stderr);
    assert.match(r.stderr, pattern);
    assert.deepEqual(r.left, []);
  });
});

Deno.test("cli: migrate names each migration it applied, then says it is up to date", async () => {
  // PostgreSQL when there is one (a PGlite directory takes seconds to initialise)
  const pg = (await postgresAvailable()) ? await createTestDatabase() : null;
  const dataDir = await Deno.makeTempDir({ prefix: "chartlog_cli_" });
  try {
    const env = {
      CHARTLOG_DATA_DIR: dataDir,
      CHARTLOG_MASTER_KEY: keyEnv(crypto.getRandomValues(new Uint8Array(32))),
      ...(pg ? { DATABASE_URL: pg.url } : {}),
    };
    const first = await runCli("migrate.ts", [], env);
    assert.equal(first.code, 0, first.stderr);
    assert.match(first.stdout, /^applied migration 1: event log$/m);
    assert.match(first.stdout, /^schema at migration \d+$/m);
    const again = await runCli("migrate.ts", [], env);
    assert.equal(again.code, 0, again.stderr);
    assert.doesNotMatch(again.stdout, /applied migration/);
    assert.match(again.stdout, /^up to date: schema at migration \d+$/m);
    const status = await runCli("status.ts", [], env);
    assert.equal(status.code, 0, status.stderr);
    assert.match(status.stdout, /^installation: [0-9a-f-]{36}$/m);
  } finally {
    await Deno.remove(dataDir, { recursive: true });
    await pg?.drop();
  }
});

Deno.test("cli: status prints each projection's checkpoint and lag behind the log", async () => {
  const pg = (await postgresAvailable()) ? await createTestDatabase() : null;
  const dataDir = await Deno.makeTempDir({ prefix: "chartlog_cli_" });
  try {
    const env = {
      CHARTLOG_DATA_DIR: dataDir,
      CHARTLOG_MASTER_KEY: keyEnv(crypto.getRandomValues(new Uint8Array(32))),
      DATABASE_URL: pg ? pg.url : `pglite://${dataDir}/pglite`,
    };
    // some events, then one async projection (stream_summary) folded up to the head; the
    // others' workers never ran (tests start none), so they trail by the whole log
    const t = await openTestApp(env);
    let head: number;
    try {
      await createUser(t.runtime, "practitioner");
      const w = new ProjectionWorker(t.runtime.store, streamSummary, createLogger("silent"), {
        pollMs: 10,
      }).start();
      try {
        for (let i = 0;; i++) {
          const [s] = await projectionStatus(t.runtime.store, [streamSummary]);
          if (s!.lag === 0) break;
          assert.ok(i < 2000, "stream_summary did not catch up");
          await new Promise((r) => setTimeout(r, 10));
        }
      } finally {
        await w.stop();
      }
      head = await t.runtime.store.headPosition();
    } finally {
      await t.close();
    }
    assert.ok(head > 0);
    const status = await runCli("status.ts", [], env);
    assert.equal(status.code, 0, status.stderr);
    const lines = new Map(
      [...status.stdout.matchAll(
        /^(\w+) v(\d+) \((inline|async)\): position (\d+) of (\d+), lag (\d+)$/gm,
      )]
        .map((
          m,
        ) => [m[1]!, {
          mode: m[3],
          position: Number(m[4]),
          head: Number(m[5]),
          lag: Number(m[6]),
        }]),
    );
    assert.deepEqual([...lines.keys()].sort(), projections.map((p) => p.name).sort());
    for (const p of projections) {
      const l = lines.get(p.name)!;
      assert.equal(l.mode, p.mode, p.name);
      assert.equal(l.head, head, p.name);
      const caughtUp = p.mode === "inline" || p.name === streamSummary.name;
      assert.deepEqual(
        [l.position, l.lag],
        caughtUp ? [head, 0] : [0, head],
        `${p.name}: ${status.stdout}`,
      );
    }
  } finally {
    await Deno.remove(dataDir, { recursive: true });
    await pg?.drop();
  }
});
