/**
 * The `memory` section of `deno task bench` (issue 15, target 7): the
 * resident memory of an idle server, started as `deno task start` starts it
 * (tests/support/server.ts: the task's permission flags, a child process of
 * its own). Three starts, one after another:
 *
 *   - PGlite, first start: an empty data directory (initdb and every migration run);
 *   - PGlite, restart: the same directory again (nothing to initialise or migrate);
 *   - PostgreSQL: a fresh database on TEST_DATABASE_URL's server.
 *
 * Each server is polled until /ready answers 200, left idle, and its VmRSS
 * read from /proc/<pid>/status; then clients drive GET /ready (a migration
 * and projection-status read: every request queries the database) over real
 * HTTP, so that a memory saving that slows requests shows beside it. The
 * PGlite starts are held to the ≤ 300 MB target ("meets"/"below"), printed
 * with the load average (an absolute figure: other processes skew it).
 *
 * Knobs (positive integers):
 *
 *   BENCH_MEMORY_IDLE_S   seconds idle before RSS is read      (default 5)
 *   BENCH_MEMORY_READS    GET /ready requests per server       (default 2000)
 *   BENCH_MEMORY_CLIENTS  concurrent clients                   (default 8)
 */
import { type ServerProcess, startServer, waitForStatus } from "../support/server.ts";
import { envInt, fmtInt, fmtMs, percentile, type SectionDeps, table } from "./stats.ts";

const cfg = {
  idleS: envInt("BENCH_MEMORY_IDLE_S", 5),
  reads: envInt("BENCH_MEMORY_READS", 2000),
  clients: envInt("BENCH_MEMORY_CLIENTS", 8),
};
/** Issue 15, target 7: an idle embedded server holds at most this. */
export const PGLITE_RSS_TARGET_MB = 300;

const loadavg = () => Deno.readTextFileSync("/proc/loadavg").split(" ").slice(0, 3).join(" ");

/** VmRSS and VmHWM (peak) of a process, in MB. */
export const rssOf = (pid: number): { rss: number; peak: number } => {
  const status = Deno.readTextFileSync(`/proc/${pid}/status`);
  const kb = (field: string) => Number(status.match(new RegExp(`${field}:\\s+(\\d+) kB`))?.[1]);
  return { rss: kb("VmRSS") / 1024, peak: kb("VmHWM") / 1024 };
};

interface Figure {
  label: string;
  readyMs: number;
  rss: number;
  peak: number;
  load: string;
  rate: number;
  p50: number;
  p99: number;
  rssAfter: number;
}

const measure = async (label: string, server: ServerProcess): Promise<Figure> => {
  const t0 = performance.now();
  await (await waitForStatus(server, "/ready", 200)).body?.cancel();
  const readyMs = performance.now() - t0;
  await new Promise((r) => setTimeout(r, cfg.idleS * 1000));
  const { rss, peak } = rssOf(server.child.pid);
  const load = loadavg();
  const latencies: number[] = [];
  let left = cfg.reads;
  const started = performance.now();
  await Promise.all(Array.from({ length: cfg.clients }, async () => {
    while (left-- > 0) {
      const t = performance.now();
      const res = await fetch(`${server.url}/ready`);
      await res.body?.cancel();
      if (res.status !== 200) throw new Error(`GET /ready answered ${res.status}`);
      latencies.push(performance.now() - t);
    }
  }));
  const rate = latencies.length / ((performance.now() - started) / 1000);
  return {
    label,
    readyMs,
    rss,
    peak,
    load,
    rate,
    p50: percentile(latencies, 0.5),
    p99: percentile(latencies, 0.99),
    rssAfter: rssOf(server.child.pid).rss,
  };
};

/** Starts a server in `dir` with `env`, measures it, and stops it however the measure ends. */
const run = async (label: string, env: Record<string, string>, dir: string) => {
  const server = await startServer(env, dir);
  try {
    return await measure(label, server);
  } finally {
    await server.kill();
  }
};

/** Runs the section; returns the summary lines main.ts prints at the end. */
export const memoryBench = async (deps: Pick<SectionDeps, "newPgDatabase" | "scoped">) => {
  console.log(JSON.stringify(cfg));
  const dir = await Deno.makeTempDir({ prefix: "chartlog-memory-bench-" });
  const figures: Figure[] = [];
  try {
    const env = {
      CHARTLOG_DATA_DIR: `${dir}/data`,
      CHARTLOG_MASTER_KEY: btoa(String.fromCharCode(...crypto.getRandomValues(new Uint8Array(32)))),
      LOG_LEVEL: "warn",
    };
    figures.push(await run("PGlite, first start", env, dir));
    figures.push(await run("PGlite, restart", env, dir));
    await deps.scoped(async () => {
      const url = await deps.newPgDatabase();
      figures.push(
        await run("PostgreSQL", { ...env, CHARTLOG_DATA_DIR: `${dir}/pg`, DATABASE_URL: url }, dir),
      );
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
  const mb = (n: number) => `${Math.round(n)} MB`;
  console.log(table(
    [
      "server",
      "ready after",
      "idle RSS",
      "peak RSS",
      "load avg",
      "GET /ready req/s",
      "p50 ms",
      "p99 ms",
      "RSS after",
    ],
    figures.map((f) => [
      f.label,
      `${(f.readyMs / 1000).toFixed(1)}s`,
      mb(f.rss),
      mb(f.peak),
      f.load,
      fmtInt(f.rate),
      fmtMs(f.p50),
      fmtMs(f.p99),
      mb(f.rssAfter),
    ]),
    new Set([1, 2, 3, 5, 6, 7, 8]),
  ));
  return figures.filter((f) => f.label.startsWith("PGlite")).map((f) =>
    `\nidle ${f.label}: ${mb(f.rss)} RSS vs target ≤ ${PGLITE_RSS_TARGET_MB} MB: ` +
    (f.rss <= PGLITE_RSS_TARGET_MB ? "meets" : "below") +
    ` target (load ${f.load}; PostgreSQL: ${
      mb(figures.find((g) => g.label === "PostgreSQL")?.rss ?? NaN)
    })`
  );
};
