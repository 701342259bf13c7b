import assert from "node:assert/strict";
import { z } from "zod";
import { ConcurrencyError, ConflictError } from "../src/errors.ts";
import { Catalog, defineEvent } from "../src/store/catalog.ts";
import { eventHash } from "../src/store/hash_chain.ts";
import { sql } from "../src/store/sql.ts";
import type { AppendResult, Projection, StoredEvent } from "../src/store/types.ts";
import { verifyChain } from "../src/store/verify_chain.ts";
import { subjectEvents } from "../events/subject.ts";
import { CounterIncremented } from "./fixtures/test_events.ts";
import { eachDriver } from "./support/harness.ts";

/**
 * The one-statement appends (`append_events` and `append_event` for a lone
 * event, migration 10, called by src/store/append.ts): the database chains the hashes from JSON texts the
 * client encoded, and the result must be `eventHash` byte for byte, so that
 * `audit verify` (JavaScript) keeps verifying the log. Both drivers.
 */

const Anything = defineEvent({
  type: "AnythingRecorded",
  version: 1,
  schema: z.record(z.string(), z.unknown()),
});
const catalog = new Catalog([...subjectEvents, CounterIncremented, Anything]);

// every character JSON escapes (but NUL, which jsonb refuses), and some it does not
const controls = Array.from({ length: 31 }, (_, i) => String.fromCharCode(i + 1)).join("");
const awkward = [
  `quote " backslash \\ slash / ${controls}`,
  "\u007f\u0080\u00ff \u2028\u2029 é 中文 😀 e\u0301 \ufeff",
  "</script><!-- ' `",
];

eachDriver("append: the database's hashes are eventHash for awkward payloads", async (h) => {
  const store = h.store;
  const payloads: Record<string, unknown>[] = [
    { text: awkward[0], n: 0.1, big: 1e21, small: -3.5e-7, max: 2 ** 53 - 1, neg: -0 },
    { "é": awkward[1], b: [1, "two", null, true, { z: 1, a: [awkward[2]] }], a: {} },
    { "": "empty key", "\u2028": "line separator key", nested: { y: { x: { w: [] } } } },
  ];
  const meta = {
    actorId: "user-\u00e9",
    userAgent: 'agent "quoted" \\ back',
    reason: awkward.join(" | "),
    requestId: "req-\t1",
  };
  const stream = "t.x:y@z_-1";
  await store.append(
    stream,
    "no_stream",
    payloads.map((data) => ({ type: Anything.type, data })),
    meta,
  );
  // the same payloads again, one per append (append_event, for a batch of one event),
  // chaining on the stored head
  for (const [i, data] of payloads.entries()) {
    await store.append(stream, 3 + i, [{ type: Anything.type, data }], meta);
  }
  await store.append("counter-1", "no_stream", [{ type: "CounterIncremented", data: { by: 1 } }]);

  const rows = await h.db.query<{
    stream_version: number;
    event_id: string;
    recorded_at: Date | string;
    prev_hash: string | null;
    hash: string;
  }>(sql`select stream_version, event_id::text as event_id, recorded_at, prev_hash, hash
    from events where stream_id = ${stream} order by stream_version`);
  assert.equal(rows.length, 6);
  // recomputed from the values as the caller gave them, not as jsonb returns them
  let prev: string | null = null;
  for (const [i, r] of rows.entries()) {
    const expected = eventHash({
      streamId: stream,
      streamVersion: i + 1,
      eventId: r.event_id,
      type: Anything.type,
      schemaVersion: 1,
      data: payloads[i % 3],
      metadata: meta,
      recordedAt: new Date(r.recorded_at),
      prevHash: prev,
    });
    assert.equal(r.prev_hash, prev, `prev_hash of version ${i + 1}`);
    assert.equal(r.hash, expected, `hash of version ${i + 1}`);
    prev = r.hash;
  }
  // and the verifier `audit verify` runs agrees over the whole log
  const report = await verifyChain(h.db);
  assert.deepEqual({ ok: report.ok, events: report.events, streams: report.streams }, {
    ok: true,
    events: 7,
    streams: 2,
  });
}, { catalog });

eachDriver("append: one batch, one outcome per caller", async (h) => {
  const store = await h.openStore();
  const commits: string[][] = [];
  store.onCommit((types) => commits.push([...types]));
  const one = (by: number) => ({ type: "CounterIncremented", data: { by } });
  // issued in one tick: group commit takes them as one batch, in this order
  // (a request of several events joins the queue a little later: it is sealed event by event)
  const settled = await Promise.allSettled([
    store.append("counter-a", "no_stream", [one(1)]),
    store.append("counter-a", 1, [one(2)]), // chains on the first, in the same statement
    store.append("counter-a", 0, [one(3)]), // the stream is at 2 by then
    store.append("counter-c", 5, [one(4)]), // no such version
    store.append("counter-c", "no_stream", [one(5)]),
    store.append("counter-b", "any", [one(6), one(7)]),
  ]);
  const ok = settled.map((s) => s.status === "fulfilled" ? s.value.version : null);
  assert.deepEqual(ok, [1, 2, null, null, 1, 2]);
  const conflict = (i: number) => (settled[i] as PromiseRejectedResult).reason;
  assert.ok(conflict(2) instanceof ConcurrencyError);
  assert.equal(conflict(2).actual, 2);
  assert.ok(conflict(3) instanceof ConcurrencyError);
  assert.equal(conflict(3).actual, 0);
  assert.deepEqual(commits, [Array(5).fill("CounterIncremented")]);

  const rows = await h.db.query<{ stream_id: string; v: number; by: number; x: string; p: string }>(
    sql`select stream_id, stream_version as v, (data->>'by')::int as by,
      transaction_id::text as x, global_position::text as p
      from events order by global_position`,
  );
  assert.deepEqual(rows.map((r) => [r.stream_id, r.v, r.by]), [
    ["counter-a", 1, 1],
    ["counter-a", 2, 2],
    ["counter-c", 1, 5],
    ["counter-b", 1, 6],
    ["counter-b", 2, 7],
  ]);
  assert.equal(new Set(rows.map((r) => r.x)).size, 1, "one transaction");
  const positions = settled.flatMap((s) => s.status === "fulfilled" ? s.value.positions : []);
  assert.deepEqual(positions, rows.map((r) => Number(r.p)));
  assert.equal((await verifyChain(h.db)).ok, true);
  // a version beyond the column's range is a conflict like any other
  await assert.rejects(
    store.append("counter-a", 2 ** 40, [one(8)]),
    (e: unknown) => e instanceof ConcurrencyError && e.actual === 2 && e.expected === 2 ** 40,
  );
});

eachDriver("append: inline projections see each event as stored, in its transaction", async (h) => {
  const seen: StoredEvent[] = [];
  const recorder: Projection = {
    name: "recorder",
    version: 1,
    mode: "inline",
    tables: [],
    setup: "",
    handlers: {
      CounterIncremented: async (db, e) => {
        // the row is visible to the projection: same transaction
        const [r] = await db.query<{ n: number }>(
          sql`select count(*)::int as n from events where event_id = ${e.eventId}::uuid`,
        );
        assert.equal(r?.n, 1);
        // the function's planner setting for its own queries does not reach the projection's
        const [m] = await db.query<{ m: string }>(
          sql`select current_setting('plan_cache_mode') as m`,
        );
        assert.equal(m?.m, "auto");
        seen.push(e);
      },
    },
  };
  const store = await h.openStore({ projections: [recorder] });
  const one = (by: number) => ({ type: "CounterIncremented", data: { by } });
  await Promise.all([
    store.append("counter-i", "no_stream", [one(1)], { actorId: "user-1" }),
    store.append("counter-i", "no_stream", [one(2)]).catch((e) => e),
    store.append("counter-j", "no_stream", [one(3), one(4)]),
  ]);
  await store.append("counter-i", 1, [one(5)]);
  const stored = [
    ...(await store.readStream("counter-i")),
    ...(await store.readStream("counter-j")),
  ].sort((a, b) => a.globalPosition - b.globalPosition);
  assert.equal(stored.length, 4);
  const pick = (e: StoredEvent) => ({
    globalPosition: e.globalPosition,
    streamId: e.streamId,
    streamVersion: e.streamVersion,
    eventId: e.eventId,
    data: e.data,
    metadata: e.metadata,
    recordedAt: e.recordedAt.toISOString(),
    transactionId: e.transactionId,
    prevHash: e.prevHash,
    hash: e.hash,
  });
  assert.deepEqual(seen.map(pick), stored.map(pick));
}, { catalog });

eachDriver(
  "append: batches in flight together keep each stream's versions, the chains and commit order",
  async (h) => {
    // On PostgreSQL a second batch goes out while the first holds the append
    // lock (EventStore's appendsInFlight, 2 by default). 40 writers whose
    // appends arrive spread out (writers in lock step all join one batch) keep
    // both busy. Each writes to a stream of its own at exact versions and to
    // one of four shared streams at "any".
    const one = (by: number) => ({ type: "CounterIncremented", data: { by } });
    const rounds = 10;
    const acks: AppendResult[] = [];
    await Promise.all(Array.from({ length: 40 }, async (_, w) => {
      for (let i = 0; i < rounds; i++) {
        await new Promise((r) => setTimeout(r, (w + i) % 3));
        acks.push(
          await h.store.append(`counter-own${w}`, i === 0 ? "no_stream" : i, [one(i + 1)]),
          await h.store.append(`counter-shared${w % 4}`, "any", [one(w + 1)]),
        );
      }
    }));
    const rows = await h.db.query<{ p: string; s: string; v: number; x: string }>(sql`select
      global_position::text as p, stream_id as s, stream_version as v, transaction_id::text as x
      from events order by global_position`);
    assert.equal(rows.length, 40 * rounds * 2);
    // each caller was told its own event's stream, version and position
    const byPosition = new Map(rows.map((r) => [Number(r.p), r]));
    for (const a of acks) {
      const r = byPosition.get(a.positions[0]!)!;
      assert.deepEqual([r.s, r.v], [a.streamId, a.version]);
    }
    assert.equal(new Set(acks.map((a) => a.positions[0])).size, acks.length);
    const versions = new Map<string, number[]>();
    for (const r of rows) versions.set(r.s, [...(versions.get(r.s) ?? []), r.v]);
    for (const [s, vs] of versions) {
      // in position order, every stream counts 1, 2, 3, ... without a gap or a repeat
      assert.deepEqual(vs, vs.map((_, i) => i + 1), s);
    }
    assert.equal(versions.size, 44);
    // positions are taken under the lock that is held through COMMIT: the
    // transactions' ids never go back in position order
    for (let i = 1; i < rows.length; i++) {
      assert.ok(BigInt(rows[i]!.x) >= BigInt(rows[i - 1]!.x), `position order at ${i}`);
    }
    assert.equal((await verifyChain(h.db)).ok, true);
  },
);

eachDriver(
  "append: a batch of one-event requests on distinct streams (one statement)",
  async (h) => {
    const store = h.store;
    await store.append("t-old", "no_stream", [{ type: Anything.type, data: { a: awkward[0] } }]);
    await store.append("t-gone", "no_stream", [{ type: Anything.type, data: { a: 1 } }]);
    const meta = { actorId: "user-\u00e9", reason: awkward[1] };
    const payloads = [{ x: awkward[2], n: 1e21 }, { "é": [awkward[0], null] }, {}, { b: true }];
    // issued in one tick: one batch, each request a stream of its own and one event
    const settled = await Promise.allSettled([
      store.append("t-old", 1, [{ type: Anything.type, data: payloads[0]! }], meta),
      store.append("t-new", "no_stream", [{ type: Anything.type, data: payloads[1]! }], meta),
      store.append("t-gone", 5, [{ type: Anything.type, data: payloads[2]! }], meta),
      store.append("t-any", "any", [{ type: Anything.type, data: payloads[3]! }]),
    ]);
    assert.deepEqual(
      settled.map((s) => s.status === "fulfilled" ? s.value.version : null),
      [2, 1, null, 1],
    );
    const conflict = (settled[2] as PromiseRejectedResult).reason;
    assert.ok(conflict instanceof ConcurrencyError);
    assert.equal(conflict.actual, 1);
    const rows = await h.db.query<{
      stream_id: string;
      stream_version: number;
      event_id: string;
      recorded_at: Date | string;
      prev_hash: string | null;
      hash: string;
      p: string;
      x: string;
    }>(sql`select stream_id, stream_version, event_id::text as event_id, recorded_at, prev_hash,
      hash, global_position::text as p, transaction_id::text as x
    from events where global_position > 2 order by global_position`);
    assert.deepEqual(rows.map((r) => [r.stream_id, r.stream_version]), [
      ["t-old", 2],
      ["t-new", 1],
      ["t-any", 1],
    ]);
    assert.equal(new Set(rows.map((r) => r.x)).size, 1, "one transaction");
    const positions = settled.flatMap((s) => s.status === "fulfilled" ? s.value.positions : []);
    assert.deepEqual(positions, rows.map((r) => Number(r.p)));
    const [head] = await h.db.query<{ hash: string }>(
      sql`select hash from events where stream_id = 't-old' and stream_version = 1`,
    );
    for (const [k, r] of rows.entries()) {
      const prev = r.stream_id === "t-old" ? head!.hash : null;
      assert.equal(r.prev_hash, prev, `prev_hash of ${r.stream_id}`);
      assert.equal(
        r.hash,
        eventHash({
          streamId: r.stream_id,
          streamVersion: r.stream_version,
          eventId: r.event_id,
          type: Anything.type,
          schemaVersion: 1,
          data: payloads[[0, 1, 3][k]!],
          metadata: r.stream_id === "t-any" ? {} : meta,
          recordedAt: new Date(r.recorded_at),
          prevHash: prev,
        }),
        `hash of ${r.stream_id}`,
      );
    }
    assert.equal((await verifyChain(h.db)).ok, true);
  },
  { catalog },
);

eachDriver("appendMany: several streams in one transaction, all or none", async (h) => {
  const store = h.store;
  const one = (by: number) => ({ type: "CounterIncremented", data: { by } });
  const rows = async () =>
    (await h.db.query<{ s: string; v: number; x: string }>(sql`select stream_id as s,
      stream_version as v, transaction_id::text as x from events order by global_position`))
      .map((r) => [r.s, r.v, r.x] as const);

  const [a, b] = await store.appendMany([
    { streamId: "counter-a", expected: "no_stream", events: [one(1)] },
    { streamId: "counter-b", expected: "no_stream", events: [one(2), one(3)] },
  ], { actorId: "user-1" });
  assert.deepEqual([a!.version, b!.version], [1, 2]);
  let r = await rows();
  assert.equal(r.length, 3);
  assert.equal(new Set(r.map(([, , x]) => x)).size, 1, "one transaction");

  // the first request conflicts: nothing is written, the error names its stream
  await assert.rejects(
    store.appendMany([
      { streamId: "counter-a", expected: "no_stream", events: [one(4)] },
      { streamId: "counter-c", expected: "no_stream", events: [one(5)] },
    ]),
    (e: unknown) => e instanceof ConcurrencyError && e.streamId === "counter-a" && e.actual === 1,
  );
  // the second conflicts after the first was appended in the statement: rolled back
  await assert.rejects(
    store.appendMany([
      { streamId: "counter-c", expected: "no_stream", events: [one(6)] },
      { streamId: "counter-b", expected: 7, events: [one(7)] },
    ]),
    (e: unknown) => e instanceof ConcurrencyError && e.streamId === "counter-b" && e.actual === 2,
  );
  assert.equal((await rows()).length, 3);
  assert.equal(await store.streamVersion("counter-c"), 0);

  // in one batch with others: a unit that partly fails spoils nobody else's append
  const settled = await Promise.allSettled([
    store.appendMany([
      { streamId: "counter-d", expected: "no_stream", events: [one(8)] },
      { streamId: "counter-e", expected: "no_stream", events: [one(9)] },
    ]),
    store.appendMany([
      { streamId: "counter-f", expected: "no_stream", events: [one(10)] },
      { streamId: "counter-a", expected: 0, events: [one(11)] },
    ]),
    store.append("counter-g", "no_stream", [one(12)]),
    store.append("counter-a", 1, [one(13)]),
  ]);
  assert.deepEqual(settled.map((s) => s.status), [
    "fulfilled",
    "rejected",
    "fulfilled",
    "fulfilled",
  ]);
  const reason = (settled[1] as PromiseRejectedResult).reason;
  assert.ok(reason instanceof ConcurrencyError);
  assert.equal(reason.streamId, "counter-a");
  r = await rows();
  assert.deepEqual(r.slice(3).map(([s, v]) => [s, v]).sort(), [
    ["counter-a", 2],
    ["counter-d", 1],
    ["counter-e", 1],
    ["counter-g", 1],
  ]);
  assert.equal(await store.streamVersion("counter-f"), 0);
  assert.equal((await verifyChain(h.db)).ok, true);

  // a stream twice in one call is refused before anything is queued
  await assert.rejects(
    store.appendMany([
      { streamId: "counter-h", expected: "no_stream", events: [one(1)] },
      { streamId: "counter-h", expected: 1, events: [one(2)] },
    ]),
    /one request per stream/,
  );
}, { catalog });

eachDriver(
  "appendMany: 20 concurrent callers claim one stream, each with a stream of its own: one wins whole",
  async (h) => {
    const one = (by: number) => ({ type: "CounterIncremented", data: { by } });
    const settled = await Promise.allSettled(
      Array.from({ length: 20 }, (_, i) =>
        h.store.appendMany([
          { streamId: "counter-claim", expected: "no_stream", events: [one(i + 1)] },
          { streamId: `counter-own${i}`, expected: "no_stream", events: [one(i + 1)] },
        ])),
    );
    const won = settled.flatMap((s, i) => s.status === "fulfilled" ? [i] : []);
    assert.equal(won.length, 1);
    for (const s of settled) {
      if (s.status === "rejected") {
        assert.ok(s.reason instanceof ConcurrencyError);
        assert.equal(s.reason.streamId, "counter-claim");
      }
    }
    const streams = await h.db.query<{ s: string; by: number }>(
      sql`select stream_id as s, (data->>'by')::int as by from events order by global_position`,
    );
    assert.deepEqual(streams.map((r) => [r.s, r.by]), [
      ["counter-claim", won[0]! + 1],
      [`counter-own${won[0]}`, won[0]! + 1],
    ]);
    assert.equal((await verifyChain(h.db)).ok, true);
  },
);

eachDriver(
  "append: a new subject's key is stored with its first events, in their transaction",
  async (h) => {
    const store = h.store;
    const keyRows = async (subject: string) =>
      await h.db.query<{ wrapped_key: string | null }>(
        sql`select wrapped_key from subject_keys where subject_id = ${subject}`,
      );
    const note = (subjectId: string, text: string) => ({
      type: "NoteWritten",
      data: { subjectId, title: "t", text },
    });
    const s1 = `patient-${crypto.randomUUID()}`;
    const fresh = await store.codec.freshKey(s1);
    assert.equal((await keyRows(s1)).length, 0, "made in memory");
    await store.append(`note-${s1}`, "no_stream", [note(s1, "first")], {}, { newKey: fresh });
    const [row] = await keyRows(s1);
    assert.equal(row?.wrapped_key, fresh.wrapped);
    // a codec that caches nothing opens the note with the stored key
    const cold = await h.openStore();
    const [e] = await cold.readStream(`note-${s1}`);
    assert.equal(e!.data.text, "first");

    // an append that fails its version check stores no key (and leaves no event)
    const s2 = `patient-${crypto.randomUUID()}`;
    await assert.rejects(
      store.append(`note-${s1}`, "no_stream", [note(s2, "lost")], {}, {
        newKey: await store.codec.freshKey(s2),
      }),
      ConcurrencyError,
    );
    assert.equal((await keyRows(s2)).length, 0);
    // in a batch whose other requests commit, too
    const s3 = `patient-${crypto.randomUUID()}`, s4 = `patient-${crypto.randomUUID()}`;
    const settled = await Promise.allSettled([
      store.append(`note-${s3}`, "no_stream", [note(s3, "kept")], {}, {
        newKey: await store.codec.freshKey(s3),
      }),
      store.append(`note-${s1}`, 0, [note(s4, "lost")], {}, {
        newKey: await store.codec.freshKey(s4),
      }),
    ]);
    assert.deepEqual(settled.map((s) => s.status), ["fulfilled", "rejected"]);
    assert.equal((await keyRows(s3)).length, 1);
    assert.equal((await keyRows(s4)).length, 0);

    // a subject that has a key already: the append fails, nothing is written, the key stays
    await assert.rejects(
      store.append(`note2-${s1}`, "no_stream", [note(s1, "again")], {}, {
        newKey: await store.codec.freshKey(s1),
      }),
      ConflictError,
    );
    assert.equal(await store.streamVersion(`note2-${s1}`), 0);
    assert.equal((await keyRows(s1))[0]?.wrapped_key, fresh.wrapped);
    assert.equal((await verifyChain(h.db)).ok, true);
  },
);

eachDriver(
  "append: a write-only inline projection's statements commit with the append, and a failing one rolls it back",
  async (h) => {
    // Projection.writeOnly: on PostgreSQL its statements go out with COMMIT
    // (held back, answered with no rows); PGlite runs them in place. Either
    // way the rows commit with the events, and a statement that fails takes
    // its append back (the others in the batch commit).
    const counted: Projection = {
      name: "counted",
      version: 1,
      mode: "inline",
      tables: ["counted"],
      setup: `create table counted (by integer primary key, stream text not null)`,
      handlers: {
        CounterIncremented: async (db, e) => {
          const rows = await db.query(
            sql`insert into counted (by, stream) values (${e.data.by}::integer, ${e.streamId})`,
          );
          assert.deepEqual(rows, []);
        },
      },
      writeOnly: true,
    };
    const store = await h.openStore({ projections: [counted] });
    const one = (by: number) => ({ type: "CounterIncremented", data: { by } });
    await Promise.all([
      store.append("counter-w1", "no_stream", [one(1)]),
      store.append("counter-w2", "no_stream", [one(2), one(3)]),
    ]);
    const settled = await Promise.allSettled([
      store.append("counter-w3", "no_stream", [one(4)]),
      store.append("counter-w4", "no_stream", [one(2)]), // `by` 2 is counted already
      store.append("counter-w5", "no_stream", [one(5)]),
    ]);
    assert.deepEqual(settled.map((s) => s.status), ["fulfilled", "rejected", "fulfilled"]);
    const rows = await h.db.query<{ by: number; stream: string }>(
      sql`select by, stream from counted order by by`,
    );
    assert.deepEqual(rows.map((r) => [r.by, r.stream]), [
      [1, "counter-w1"],
      [2, "counter-w2"],
      [3, "counter-w2"],
      [4, "counter-w3"],
      [5, "counter-w5"],
    ]);
    assert.equal(await store.streamVersion("counter-w4"), 0);
    assert.equal((await verifyChain(h.db)).ok, true);
  },
);
