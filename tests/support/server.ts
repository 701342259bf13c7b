/**
 * Runs the real server in a child process, the way `deno task start` does:
 * the same permission flags, read from deno.json (never --allow-all), so a
 * permission the task lacks fails here as it would for an operator.
 */
const ROOT = new URL("../../", import.meta.url);

/** The `deno` arguments of the `start` task, with the entry point made absolute. */
export const startTaskArgs = async (): Promise<string[]> => {
  const config = JSON.parse(await Deno.readTextFile(new URL("deno.json", ROOT)));
  const words = String(config.tasks.start).split(/\s+/).filter(Boolean);
  if (words[0] !== "deno") throw new Error(`unexpected start task: ${config.tasks.start}`);
  return words.slice(1).map((w) => (w.endsWith(".ts") ? new URL(w, ROOT).pathname : w));
};

/** A TCP port nothing listens on right now. */
export const freePort = (): number => {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
};

export interface ServerProcess {
  child: Deno.ChildProcess;
  port: number;
  url: string;
  /** stdout lines so far (raw text). */
  stdout: string[];
  /** stderr lines so far (raw text). */
  stderr: string[];
  /** Resolves with the exit status; `exited` flips when it does. */
  status: Promise<Deno.CommandStatus>;
  readonly exited: boolean;
  /** Waits (bounded) for a stdout JSON line matching `pred`, searching from line `from`. */
  waitForLog(pred: (l: Record<string, unknown>) => boolean, from?: number): Promise<number>;
  /** Kills the process if it still runs and waits for its output to end. */
  kill(): Promise<void>;
}

const collect = async (stream: ReadableStream<Uint8Array>, into: string[]) => {
  let buf = "";
  for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
    buf += chunk;
    for (let nl = buf.indexOf("\n"); nl >= 0; nl = buf.indexOf("\n")) {
      into.push(buf.slice(0, nl));
      buf = buf.slice(nl + 1);
    }
  }
  if (buf) into.push(buf);
};

/** Parses a log line; null when it is not JSON. */
export const parseLine = (l: string): Record<string, unknown> | null => {
  try {
    const v = JSON.parse(l);
    return v && typeof v === "object" ? v : null;
  } catch {
    return null;
  }
};

/** Starts `deno task start` in `cwd` with exactly `env` (plus what Deno needs to find its cache). */
export const startServer = async (
  env: Record<string, string>,
  cwd: string,
): Promise<ServerProcess> => {
  const port = Number(env.PORT ?? freePort());
  const full: Record<string, string> = { PORT: String(port), ...env };
  for (const k of ["HOME", "PATH", "DENO_DIR"]) {
    const v = Deno.env.get(k);
    if (v) full[k] = v;
  }
  const child = new Deno.Command(Deno.execPath(), {
    args: await startTaskArgs(),
    cwd,
    clearEnv: true,
    env: full,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const stdout: string[] = [];
  const stderr: string[] = [];
  const output = Promise.all([collect(child.stdout, stdout), collect(child.stderr, stderr)]);
  let exited = false;
  const status = child.status.then((s) => {
    exited = true;
    return s;
  });
  return {
    child,
    port,
    url: `http://127.0.0.1:${port}`,
    stdout,
    stderr,
    status,
    get exited() {
      return exited;
    },
    waitForLog: async (pred, from = 0) => {
      // a guard against a hang only: 60 s
      for (let i = 0; i < 1200; i++) {
        for (let n = from; n < stdout.length; n++) {
          const l = parseLine(stdout[n]!);
          if (l && pred(l)) return n;
        }
        if (exited) break;
        await new Promise((r) => setTimeout(r, 50));
      }
      throw new Error(
        `no such log line; the server ${exited ? "exited" : "runs"}:\n` +
          [...stdout.slice(-20), ...stderr.slice(-20)].join("\n"),
      );
    },
    kill: async () => {
      if (!exited) {
        try {
          child.kill("SIGKILL");
        } catch {
          // already gone
        }
      }
      await status;
      await output;
    },
  };
};

/** Polls `path` until it answers `status` (bounded: 60 s). */
export const waitForStatus = async (
  server: ServerProcess,
  path: string,
  status: number,
): Promise<Response> => {
  for (let i = 0; i < 1200 && !server.exited; i++) {
    try {
      const res = await fetch(server.url + path);
      if (res.status === status) return res;
      await res.body?.cancel();
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(
    `${path} never answered ${status}:\n${[...server.stdout, ...server.stderr].join("\n")}`,
  );
};

/**
 * Lines Deno itself may print to stderr while it prepares npm packages (a
 * boxed notice about lifecycle scripts): not the server's log.
 */
export const denoNotice = (line: string): boolean =>
  /^\s*(\[[0-9;]*m)*\s*[╭│╰]/.test(line.replaceAll("\u001b", "")) || line.trim() === "";
