/**
 * Child program of the crash-safety test (tests/crash_test.ts).
 *
 *   deno run -A tests/support/crash_child.ts <location> [writers] [eventsPerCommand]
 *
 * `location` is a PostgreSQL URL or a PGlite data directory. The 32-byte
 * master key comes hex-encoded in CRASH_MASTER_KEY so the parent can reopen
 * the store. The child migrates, prints `{"ready":true}`, then runs `writers`
 * concurrent loops; writer k appends commands of `eventsPerCommand`
 * CounterIncremented events (`by: k + 1`) to its own stream `counter-w<k>` at
 * the exact expected version. After each acknowledged append it writes one
 * JSON line `{"stream","version","ids","positions"}` to stdout with a
 * synchronous write, so the line is in the pipe before that writer's next
 * append. It runs until killed (or CRASH_CHILD_MAX_MS elapses: exit code 3,
 * so an orphan never runs forever). Any append error is fatal: exit code 1.
 */
import type { Db } from "../../src/store/db.ts";
import { EventStore } from "../../src/store/event_store.ts";
import { subjectKeyShredder } from "../../src/store/shred.ts";
import { migrate } from "../../src/store/migrations.ts";
import { PhiCodec } from "../../src/store/phi_codec.ts";
import { openPglite } from "../../src/store/pglite_driver.ts";
import { openPostgres } from "../../src/store/postgres_driver.ts";
import { testCatalog } from "../fixtures/test_events.ts";

export interface AckLine {
  stream: string;
  version: number;
  ids: string[];
  positions: number[];
}

const enc = new TextEncoder();

/** Writes all of `line` to stdout before returning (blocks the event loop). */
const emit = (obj: unknown): void => {
  const bytes = enc.encode(JSON.stringify(obj) + "\n");
  let off = 0;
  while (off < bytes.length) off += Deno.stdout.writeSync(bytes.subarray(off));
};

const hexKey = (hex: string | undefined): Uint8Array<ArrayBuffer> => {
  if (!hex || !/^[0-9a-f]{64}$/i.test(hex)) {
    throw new Error("CRASH_MASTER_KEY must be 64 hex digits");
  }
  return Uint8Array.from(hex.match(/../g)!, (h) => parseInt(h, 16));
};

const main = async (): Promise<void> => {
  const [location, writersArg = "16", perArg = "3"] = Deno.args;
  if (!location) throw new Error("usage: crash_child.ts <location> [writers] [eventsPerCommand]");
  const writers = Number(writersArg);
  const per = Number(perArg);
  const masterKey = hexKey(Deno.env.get("CRASH_MASTER_KEY"));
  const maxMs = Number(Deno.env.get("CRASH_CHILD_MAX_MS") ?? 180_000);
  setTimeout(() => {
    console.error(`crash_child: not killed within ${maxMs} ms, exiting`);
    Deno.exit(3);
  }, maxMs);

  const db: Db = /^postgres(ql)?:\/\//.test(location)
    ? openPostgres(location, { max: 4 })
    : await openPglite(location);
  await migrate(db);
  const codec = new PhiCodec(db, masterKey);
  const store = new EventStore({
    db,
    catalog: testCatalog,
    codec,
    shredder: subjectKeyShredder(codec),
  });
  emit({ ready: true });

  const writer = async (k: number): Promise<never> => {
    const stream = `counter-w${k}`;
    let version = 0;
    for (;;) {
      const events = Array.from({ length: per }, () => ({
        id: crypto.randomUUID(),
        type: "CounterIncremented",
        data: { by: k + 1 },
      }));
      const r = await store.append(stream, version, events);
      version = r.version;
      const ack: AckLine = {
        stream,
        version: r.version,
        ids: events.map((e) => e.id),
        positions: r.positions,
      };
      emit(ack);
    }
  };
  await Promise.all(Array.from({ length: writers }, (_, k) => writer(k)));
};

if (import.meta.main) {
  try {
    await main();
  } catch (err) {
    console.error("crash_child failed:", err);
    Deno.exit(1);
  }
}
