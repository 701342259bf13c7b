/**
 * Crash safety: a child process runs 16 concurrent writers appending
 * 3-event commands and reports every acknowledgement on stdout; once enough
 * are in, with appends still in flight, the child is SIGKILLed. The database
 * is then reopened here and must hold every acknowledged event at the
 * acknowledged stream and version, a verifying hash chain, and only whole
 * commands. Pass or fail never depends on timing: the kill comes after a
 * number of acknowledgements, not after a duration.
 *
 * PGlite (NodeFS) is held to the same promise: it writes WAL and data pages
 * straight through to the data directory at each commit, so a killed process
 * loses nothing acknowledged. It never calls fsync (PGlite starts Postgres
 * with -F and Emscripten's NODEFS has no fsync), so this says nothing about
 * an operating-system crash or power loss; for that, use PostgreSQL.
 */
import assert from "node:assert/strict";
import type { Db } from "../src/store/db.ts";
import { EventStore } from "../src/store/event_store.ts";
import { subjectKeyShredder } from "../src/store/shred.ts";
import { PhiCodec } from "../src/store/phi_codec.ts";
import { openPglite } from "../src/store/pglite_driver.ts";
import { openPostgres } from "../src/store/postgres_driver.ts";
import { sql } from "../src/store/sql.ts";
import { verifyChain } from "../src/store/verify_chain.ts";
import { testCatalog } from "./fixtures/test_events.ts";
import type { AckLine } from "./support/crash_child.ts";
import { createTestDatabase, postgresAvailable } from "./support/harness.ts";

const CHILD = new URL("./support/crash_child.ts", import.meta.url).pathname;
const WRITERS = 16;
const PER_COMMAND = 3;
/** Acknowledgements to wait for before the kill; varied per run, printed. */
const MIN_ACKS = 300;
/** Only a guard against a hung child; never what decides pass or fail. */
const GUARD_MS = 180_000;

interface CrashRun {
  acks: AckLine[];
  /** Acknowledgements read when the kill was sent. */
  ackedAtKill: number;
  threshold: number;
  readyMs: number;
  acksMs: number;
  exitMs: number;
}

const hex = (bytes: Uint8Array): string =>
  Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");

/** Runs the child on `location` and SIGKILLs it after `threshold` acknowledgements. */
const crashChild = async (
  location: string,
  masterKey: Uint8Array,
  threshold: number,
): Promise<CrashRun> => {
  const t0 = performance.now();
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", CHILD, location, String(WRITERS), String(PER_COMMAND)],
    env: { CRASH_MASTER_KEY: hex(masterKey), CRASH_CHILD_MAX_MS: String(GUARD_MS + 60_000) },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const stderr = new Response(child.stderr).text();
  let guardHit = false;
  const guard = setTimeout(() => {
    guardHit = true;
    child.kill("SIGKILL");
  }, GUARD_MS);

  const acks: AckLine[] = [];
  let ackedAtKill = -1;
  let readyAt = NaN, killAt = NaN;
  let buf = "";
  try {
    // Read to EOF: lines written after the kill was decided (but before it
    // landed) are acknowledgements too and are checked like the others.
    for await (const chunk of child.stdout.pipeThrough(new TextDecoderStream())) {
      buf += chunk;
      for (let nl = buf.indexOf("\n"); nl >= 0; nl = buf.indexOf("\n")) {
        const line = JSON.parse(buf.slice(0, nl));
        buf = buf.slice(nl + 1);
        if (line.ready) readyAt = performance.now();
        else acks.push(line as AckLine);
      }
      if (ackedAtKill < 0 && acks.length >= threshold) {
        ackedAtKill = acks.length;
        killAt = performance.now();
        child.kill("SIGKILL");
      }
    }
  } finally {
    clearTimeout(guard);
  }
  const status = await child.status;
  const exitAt = performance.now();
  const errText = await stderr;
  assert.ok(!guardHit, `child hung: ${acks.length} acks in ${GUARD_MS} ms\n${errText}`);
  assert.ok(
    ackedAtKill >= 0,
    `child exited (code ${status.code}) after ${acks.length} acks\n${errText}`,
  );
  // killed while still running, not exited on its own
  assert.equal(status.signal, "SIGKILL", errText);
  // a line cut by the kill would be left in `buf`; lines are written whole, so none is
  assert.equal(buf, "");
  return {
    acks,
    ackedAtKill,
    threshold,
    readyMs: readyAt - t0,
    acksMs: killAt - readyAt,
    exitMs: exitAt - killAt,
  };
};

interface Row {
  event_id: string;
  stream_id: string;
  stream_version: number;
  global_position: string | number;
  transaction_id: string;
  type: string;
  data: { by?: unknown };
}

/** Asserts the reopened log against the acknowledgements; returns figures to print. */
const checkLog = async (db: Db, masterKey: Uint8Array<ArrayBuffer>, acks: AckLine[]) => {
  const rows = await db.query<Row>(sql`select event_id::text as event_id, stream_id,
      stream_version, global_position, transaction_id::text as transaction_id, type, data
    from events order by global_position`);
  const byId = new Map(rows.map((r) => [r.event_id, r]));

  // 1. every acknowledged event is there, at the acknowledged stream, version and position
  const ackedVersion = new Map<string, number>();
  for (const a of acks) {
    assert.equal(a.version % PER_COMMAND, 0, `ack ${a.stream}@${a.version}`);
    assert.equal(a.ids.length, PER_COMMAND);
    // each writer acknowledges its commands in order, one command at a time
    assert.equal(a.version, (ackedVersion.get(a.stream) ?? 0) + PER_COMMAND);
    ackedVersion.set(a.stream, a.version);
    a.ids.forEach((id, i) => {
      const r = byId.get(id);
      assert.ok(r, `acknowledged event ${id} (${a.stream}@${a.version}) is missing`);
      assert.equal(r.stream_id, a.stream);
      assert.equal(Number(r.stream_version), a.version - PER_COMMAND + 1 + i);
      assert.equal(Number(r.global_position), a.positions[i]);
    });
  }

  // 2. the hash chain verifies
  const chain = await verifyChain(db);
  assert.equal(chain.ok, true, `chain broken: ${JSON.stringify(chain.firstBroken)}`);
  assert.equal(chain.events, rows.length);

  // 3. only whole commands, versions contiguous, nothing beyond one in-flight command
  const streams = new Map<string, Row[]>();
  for (const r of rows) {
    if (!streams.has(r.stream_id)) streams.set(r.stream_id, []);
    streams.get(r.stream_id)!.push(r);
  }
  let unacked = 0;
  for (const [stream, events] of streams) {
    const k = Number(/^counter-w(\d+)$/.exec(stream)?.[1] ?? NaN);
    assert.ok(k >= 0 && k < WRITERS, `unexpected stream ${stream}`);
    events.sort((a, b) => a.stream_version - b.stream_version);
    assert.deepEqual(
      events.map((e) => Number(e.stream_version)),
      events.map((_, i) => i + 1),
      `${stream}: versions not contiguous`,
    );
    assert.equal(events.length % PER_COMMAND, 0, `${stream}: half-written command`);
    for (let i = 0; i < events.length; i += PER_COMMAND) {
      const cmd = events.slice(i, i + PER_COMMAND);
      assert.equal(new Set(cmd.map((e) => e.transaction_id)).size, 1, `${stream}@${i + 1}`);
    }
    for (const e of events) {
      assert.equal(e.type, "CounterIncremented");
      assert.deepEqual(e.data, { by: k + 1 });
    }
    // a writer awaits each ack: at most its one in-flight command committed unacknowledged
    const extra = events.length - (ackedVersion.get(stream) ?? 0);
    assert.ok(extra === 0 || extra === PER_COMMAND, `${stream}: ${extra} events past its ack`);
    unacked += extra / PER_COMMAND;
  }
  for (const stream of ackedVersion.keys()) assert.ok(streams.has(stream), stream);

  // 4. the recovered store takes the next command at the recovered version
  const codec = new PhiCodec(db, masterKey);
  const store = new EventStore({
    db,
    catalog: testCatalog,
    codec,
    shredder: subjectKeyShredder(codec),
  });
  const head = await store.streamVersion("counter-w0");
  const next = await store.append(
    "counter-w0",
    head,
    Array.from({ length: PER_COMMAND }, () => ({ type: "CounterIncremented", data: { by: 1 } })),
  );
  assert.equal(next.version, head + PER_COMMAND);
  assert.equal((await verifyChain(db)).ok, true);

  return { events: rows.length, streams: streams.size, unackedCommands: unacked };
};

const crashAndCheck = async (
  kind: string,
  location: string,
  reopen: () => Promise<Db>,
): Promise<void> => {
  const masterKey = crypto.getRandomValues(new Uint8Array(32));
  const threshold = MIN_ACKS + Math.floor(Math.random() * 200);
  const run = await crashChild(location, masterKey, threshold);
  const t0 = performance.now();
  const db = await reopen();
  const reopenMs = performance.now() - t0;
  try {
    const figures = await checkLog(db, masterKey, run.acks);
    const ms = (n: number) => `${Math.round(n)} ms`;
    console.log(
      `${kind}: killed after ${run.ackedAtKill} acks (threshold ${run.threshold}), ` +
        `${run.acks.length} acks read in all, all present; log ${figures.events} events in ` +
        `${figures.streams} streams, ${figures.unackedCommands} commands committed but not ` +
        `acknowledged; child ready ${ms(run.readyMs)}, acks ${ms(run.acksMs)}, ` +
        `kill to exit ${ms(run.exitMs)}, reopen ${ms(reopenMs)}`,
    );
  } finally {
    await db.close();
  }
};

Deno.test("crash: SIGKILL during concurrent multi-event appends loses no acknowledged event", async (t) => {
  const pg = await postgresAvailable();
  await t.step({
    name: "postgres",
    ignore: !pg,
    fn: async () => {
      const tdb = await createTestDatabase();
      try {
        await crashAndCheck("postgres", tdb.url, () => Promise.resolve(openPostgres(tdb.url)));
      } finally {
        await tdb.drop();
      }
    },
  });
  await t.step("pglite", async () => {
    const dir = await Deno.makeTempDir({ prefix: "chartlog-crash-" });
    try {
      await crashAndCheck("pglite", dir, () => openPglite(dir));
    } finally {
      await Deno.remove(dir, { recursive: true });
      // the lock file beside the data directory (kept, emptied, by design)
      await Deno.remove(`${dir}.lock`).catch(() => {});
    }
  });
});
