import assert from "node:assert/strict";
import { ConfigError } from "../src/config.ts";
import { UnavailableError } from "../src/errors.ts";
import {
  ClamdScanner,
  parseClamdUrl,
  type Scanner,
  scannerFromUrl,
  ScannerUnavailableError,
} from "../src/media/scanner.ts";
import { EICAR_SIGNATURE, eicarBytes, startClamd } from "./support/clamd.ts";

const randomBytes = (n: number): Uint8Array => {
  const out = new Uint8Array(n);
  // getRandomValues fills at most 64 KiB per call
  for (let at = 0; at < n; at += 65536) crypto.getRandomValues(out.subarray(at, at + 65536));
  return out;
};

/** Yields `bytes` cut at the given lengths, with an empty chunk thrown in. */
async function* pieces(bytes: Uint8Array, lengths: number[]): AsyncGenerator<Uint8Array> {
  let at = 0;
  for (const len of lengths) {
    yield bytes.subarray(at, at + len);
    if (at === 0) yield new Uint8Array(0); // must not end the stream early
    at += len;
  }
  yield bytes.subarray(at);
}

const assertInfected = async (scanner: Scanner, data: Parameters<Scanner["scan"]>[0]) => {
  const result = await scanner.scan(data);
  assert.equal(result.status, "infected");
  assert.ok(result.status === "infected" && result.signature.includes(EICAR_SIGNATURE));
};

const isUnavailable = (failure: string) => (err: unknown) => {
  assert.ok(err instanceof ScannerUnavailableError, `not a ScannerUnavailableError: ${err}`);
  assert.ok(err instanceof UnavailableError);
  assert.equal(err.failure, failure);
  return true;
};

const closedPort = (): number => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr;
  listener.close();
  return port;
};

Deno.test("ClamdScanner against a private clamd", async (t) => {
  const clamd = await startClamd();
  if (!clamd) return; // not installed, and not CI: startClamd said so
  try {
    const tcp = scannerFromUrl(clamd.url)!;
    const unix = scannerFromUrl(clamd.unixUrl)!;

    await t.step("ping answers", async () => {
      assert.equal(await tcp.ping(), true);
      assert.equal(await unix.ping(), true);
    });

    await t.step("EICAR is infected", async () => {
      await assertInfected(tcp, eicarBytes());
    });

    await t.step("3 MB of random bytes are clean", async () => {
      assert.deepEqual(await tcp.scan(randomBytes(3 * 1024 * 1024)), { status: "clean" });
    });

    await t.step("EICAR split across chunks of an AsyncIterable is infected", async () => {
      await assertInfected(tcp, pieces(eicarBytes(), [1, 7, 20, 13]));
    });

    await t.step("EICAR through tiny INSTREAM chunks is infected", async () => {
      const tiny = new ClamdScanner(parseClamdUrl(clamd.url), { chunkSize: 5 });
      await assertInfected(tiny, eicarBytes());
    });

    await t.step("a ReadableStream works as the source", async () => {
      await assertInfected(tcp, new Blob([eicarBytes()]).stream());
    });

    await t.step("over a Unix socket", async () => {
      await assertInfected(unix, eicarBytes());
      assert.deepEqual(await unix.scan(randomBytes(100_000)), { status: "clean" });
    });

    await t.step("past StreamMaxLength (25M) clamd refuses: an error, never clean", async () => {
      await assert.rejects(tcp.scan(new Uint8Array(26 * 1024 * 1024)), isUnavailable("size_limit"));
      await assert.rejects(
        unix.scan(new Uint8Array(26 * 1024 * 1024)),
        isUnavailable("size_limit"),
      );
    });

    await t.step("a failing source is rethrown as is, not blamed on clamd", async () => {
      const boom = new Error("client went away");
      async function* failing() {
        yield eicarBytes().subarray(0, 10);
        throw boom;
      }
      await assert.rejects(tcp.scan(failing()), (err) => err === boom);
      assert.equal(await tcp.ping(), true);
    });

    await t.step("scans run concurrently", async () => {
      const results = await Promise.all([
        tcp.scan(eicarBytes()),
        tcp.scan(randomBytes(200_000)),
        unix.scan(eicarBytes()),
      ]);
      assert.deepEqual(results.map((r) => r.status), ["infected", "clean", "infected"]);
    });
  } finally {
    await clamd.stop();
  }
});

Deno.test("scannerFromUrl: nothing configured is null", () => {
  assert.equal(scannerFromUrl(undefined), null);
  assert.equal(scannerFromUrl(""), null);
  assert.equal(scannerFromUrl("  "), null);
});

Deno.test("parseClamdUrl: tcp and unix endpoints", () => {
  assert.deepEqual(parseClamdUrl("tcp://127.0.0.1:3310"), {
    transport: "tcp",
    hostname: "127.0.0.1",
    port: 3310,
  });
  assert.deepEqual(parseClamdUrl("tcp://clamav.internal:3310/"), {
    transport: "tcp",
    hostname: "clamav.internal",
    port: 3310,
  });
  assert.deepEqual(parseClamdUrl("tcp://[::1]:3310"), {
    transport: "tcp",
    hostname: "[::1]",
    port: 3310,
  });
  assert.deepEqual(parseClamdUrl("unix:///var/run/clamav/clamd.ctl"), {
    transport: "unix",
    path: "/var/run/clamav/clamd.ctl",
  });
  assert.deepEqual(parseClamdUrl("unix:///tmp/my%20dir/clamd.sock"), {
    transport: "unix",
    path: "/tmp/my dir/clamd.sock",
  });
  const scanner = scannerFromUrl("tcp://127.0.0.1:3310");
  assert.ok(scanner instanceof ClamdScanner);
  assert.equal(scanner.name, "clamd");
});

Deno.test("scannerFromUrl: invalid URLs throw ConfigError at start-up", () => {
  const bad = [
    "127.0.0.1:3310",
    "clamd",
    "http://127.0.0.1:3310",
    "tcp://127.0.0.1",
    "tcp://:3310",
    "tcp://127.0.0.1:0",
    "tcp://127.0.0.1:99999",
    "tcp://127.0.0.1:3310/scan",
    "tcp://user:secret@127.0.0.1:3310",
    "tcp://127.0.0.1:3310?x=1",
    "unix://var/run/clamav/clamd.ctl",
    "unix:///",
    "unix:///var/run/clamav/",
  ];
  for (const url of bad) {
    assert.throws(() => scannerFromUrl(url), ConfigError, url);
  }
  assert.throws(() => scannerFromUrl("tcp://user:secret@h:1"), (err: Error) => {
    assert.ok(!err.message.includes("secret"));
    return true;
  });
});

Deno.test("ClamdScanner: a closed port is ScannerUnavailableError, ping false", async () => {
  const scanner = scannerFromUrl(`tcp://127.0.0.1:${closedPort()}`)!;
  await assert.rejects(scanner.scan(eicarBytes()), isUnavailable("connect"));
  await assert.rejects(scanner.scan(pieces(eicarBytes(), [3])), isUnavailable("connect"));
  assert.equal(await scanner.ping(), false);
});

Deno.test("ClamdScanner: a missing Unix socket is ScannerUnavailableError", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const scanner = scannerFromUrl(`unix://${dir}/clamd.ctl`)!;
    await assert.rejects(scanner.scan(eicarBytes()), isUnavailable("connect"));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

/** A TCP server that hands each connection to `serve`, for protocol failures clamd won't produce. */
const fakeClamd = (serve: (conn: Deno.Conn) => Promise<void>) => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const conns: Deno.Conn[] = [];
  const served: Promise<void>[] = [];
  const accepting = (async () => {
    for await (const conn of listener) {
      conns.push(conn);
      served.push(serve(conn).catch(() => {}));
    }
  })();
  return {
    url: `tcp://127.0.0.1:${listener.addr.port}`,
    async close() {
      listener.close();
      for (const c of conns) {
        try {
          c.close();
        } catch { /* closed by serve */ }
      }
      await accepting.catch(() => {});
      await Promise.all(served);
    },
  };
};

const readAll = async (conn: Deno.Conn): Promise<Uint8Array> => {
  const parts: Uint8Array[] = [];
  const buf = new Uint8Array(65536);
  for (let n = await conn.read(buf); n !== null; n = await conn.read(buf)) {
    parts.push(buf.slice(0, n));
    // INSTREAM ends with a zero-length chunk
    const last = parts.at(-1)!;
    if (last.length >= 4 && last.subarray(-4).every((b) => b === 0)) break;
  }
  return new Uint8Array(parts.flatMap((p) => [...p]));
};

Deno.test("ClamdScanner: silence past the deadline is a timeout", async () => {
  const server = fakeClamd((conn) => readAll(conn).then(() => {}));
  try {
    const scanner = scannerFromUrl(server.url, { timeoutMs: 200 })!;
    const started = performance.now();
    // only the deadline can end this scan (the server never answers): its
    // "timeout" proves it fired; how soon is printed, never asserted
    await assert.rejects(scanner.scan(eicarBytes()), isUnavailable("timeout"));
    console.log(`timed out after ${Math.round(performance.now() - started)} ms (deadline 200 ms)`);
    assert.equal(await scanner.ping(), false);
  } finally {
    await server.close();
  }
});

Deno.test("ClamdScanner: an unexpected reply is an error that does not echo it", async () => {
  const enc = new TextEncoder();
  const server = fakeClamd(async (conn) => {
    const got = await readAll(conn);
    await conn.write(got.subarray(14)); // echoes the file bytes back
    conn.close();
  });
  try {
    const scanner = scannerFromUrl(server.url)!;
    await assert.rejects(scanner.scan(enc.encode("patient record text")), (err: Error) => {
      isUnavailable("protocol")(err);
      assert.ok(!err.message.includes("patient"));
      return true;
    });
  } finally {
    await server.close();
  }
});

Deno.test("ClamdScanner: clamd's own errors and hang-ups are not clean", async () => {
  const replies = ["UNKNOWN COMMAND\0", "stream: FOUND\0", "stream: OK extra\0", ""];
  for (const reply of replies) {
    const server = fakeClamd(async (conn) => {
      await readAll(conn);
      if (reply) await conn.write(new TextEncoder().encode(reply));
      conn.close();
    });
    try {
      await assert.rejects(
        scannerFromUrl(server.url)!.scan(eicarBytes()),
        isUnavailable("protocol"),
      );
    } finally {
      await server.close();
    }
  }
});
