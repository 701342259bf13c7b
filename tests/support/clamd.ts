/**
 * A private clamd for tests: its own config, port, socket and a one-signature
 * database that knows only EICAR, so it starts in well under a second and
 * needs no freshclam download. The system clamd is never touched.
 */
import { createHash } from "node:crypto";
import { ClamdScanner } from "../../src/media/scanner.ts";

/** The name our test signature reports (clamd appends `.UNOFFICIAL`). */
export const EICAR_SIGNATURE = "Chartlog.Test.EICAR";

/**
 * The standard 68-byte EICAR test file, assembled from pieces so that this
 * source file is not itself flagged by a scanner.
 */
export const eicarBytes = (): Uint8Array<ArrayBuffer> =>
  new TextEncoder().encode(
    ["X5O!P%@AP[4\\PZX54(P^)7CC)7}$", "EICAR-STANDARD-", "ANTIVIRUS-TEST-FILE!$H+H*"].join(""),
  );

/** A running private clamd. */
export interface TestClamd {
  /** `tcp://127.0.0.1:<port>` */
  url: string;
  /** `unix:///<tmp>/clamd.sock` */
  unixUrl: string;
  /** How long clamd took to answer PING, in ms. */
  startedInMs: number;
  /** Stops clamd and removes its directory; safe to call twice. */
  stop(): Promise<void>;
}

const START_TIMEOUT_MS = 60_000;
const PORT_ATTEMPTS = 3;

/**
 * Starts a private clamd, or returns null when clamd is not installed.
 * With CI=true a missing clamd throws: CI must fail, not skip.
 */
export const startClamd = async (): Promise<TestClamd | null> => {
  const binary = await findClamd();
  if (!binary) {
    if (Deno.env.get("CI") === "true") {
      throw new Error("clamd is not installed (apt-get install clamav-daemon); CI cannot skip");
    }
    console.warn("clamd is not installed: clamd tests are skipped");
    return null;
  }
  const dir = await Deno.makeTempDir({ prefix: "chartlog-clamd-" });
  try {
    await writeDatabase(`${dir}/db`);
    let lastError: unknown;
    // The free port we pick can be taken before clamd binds it; pick again.
    for (let attempt = 0; attempt < PORT_ATTEMPTS; attempt++) {
      try {
        return await launch(binary, dir, freePort());
      } catch (err) {
        lastError = err;
      }
    }
    throw lastError;
  } catch (err) {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
    throw err;
  }
};

const findClamd = async (): Promise<string | null> => {
  const dirs = ["/usr/sbin", ...(Deno.env.get("PATH") ?? "").split(":").filter(Boolean)];
  for (const d of dirs) {
    const path = `${d}/clamd`;
    const info = await Deno.stat(path).catch(() => null);
    if (info?.isFile) return path;
  }
  return null;
};

/** Web Crypto has no MD5, which `.hdb` signatures need; node:crypto does. */
const md5Hex = (bytes: Uint8Array): string => createHash("md5").update(bytes).digest("hex");

const writeDatabase = async (db: string): Promise<void> => {
  await Deno.mkdir(db);
  const eicar = eicarBytes();
  await Deno.writeTextFile(
    `${db}/eicar.hdb`,
    `${md5Hex(eicar)}:${eicar.length}:${EICAR_SIGNATURE}\n`,
  );
};

const freePort = (): number => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr;
  listener.close();
  return port;
};

const configFor = (dir: string, port: number): string =>
  [
    "Foreground yes",
    `TCPSocket ${port}`,
    "TCPAddr 127.0.0.1",
    `LocalSocket ${dir}/clamd.sock`,
    `DatabaseDirectory ${dir}/db`,
    `LogFile ${dir}/clamd.log`,
    `PidFile ${dir}/clamd.pid`,
    `TemporaryDirectory ${dir}`,
    "StreamMaxLength 25M",
    // Foreground clamd also logs to stdout; keep its self-check quiet.
    "SelfCheck 0",
    "",
  ].join("\n");

const launch = async (binary: string, dir: string, port: number): Promise<TestClamd> => {
  const conf = `${dir}/clamd.conf`;
  await Deno.writeTextFile(conf, configFor(dir, port));
  await Deno.remove(`${dir}/clamd.sock`).catch(() => {});
  const started = performance.now();
  const child = new Deno.Command(binary, {
    args: ["-c", conf],
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const stderr = drain(child.stderr);
  let exited = false;
  const status = child.status.finally(() => exited = true);
  let stopped = false;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    await terminate(child, status, () => exited);
    await stderr;
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  };
  const scanner = new ClamdScanner({ transport: "tcp", hostname: "127.0.0.1", port }, {
    timeoutMs: 1000,
  });
  const deadline = started + START_TIMEOUT_MS;
  while (performance.now() < deadline) {
    if (exited) {
      const tail = (await stderr).slice(-2000);
      await stop();
      throw new Error(`clamd exited during start-up (${(await status).code}):\n${tail}`);
    }
    if (await scanner.ping()) {
      return {
        url: `tcp://127.0.0.1:${port}`,
        unixUrl: `unix://${dir}/clamd.sock`,
        startedInMs: Math.round(performance.now() - started),
        stop,
      };
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  await stop();
  throw new Error(`clamd did not answer PING within ${START_TIMEOUT_MS} ms`);
};

/** SIGTERM, then SIGKILL if clamd lingers. */
const terminate = async (
  child: Deno.ChildProcess,
  status: Promise<Deno.CommandStatus>,
  exited: () => boolean,
): Promise<void> => {
  if (!exited()) child.kill("SIGTERM");
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<"late">((r) => timer = setTimeout(() => r("late"), 5000));
  const result = await Promise.race([status, late]);
  clearTimeout(timer);
  if (result === "late") {
    child.kill("SIGKILL");
    await status;
  }
};

/** Collects a stream as text, keeping the pipe from filling and blocking clamd. */
const drain = async (stream: ReadableStream<Uint8Array>): Promise<string> => {
  let text = "";
  for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
    text = (text + chunk).slice(-8000);
  }
  return text;
};
