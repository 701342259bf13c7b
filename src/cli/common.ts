import { type Config, ConfigError, loadConfig } from "../config.ts";
import { createLogger, type Logger } from "../logger.ts";
import { openRuntime, type Runtime } from "../runtime.ts";

/**
 * Configuration, a logger on stderr and a runtime without projection
 * workers, for `deno task` commands. On the embedded database, stop the
 * server first: one PGlite data directory serves one process at a time.
 */
export const openCli = async (): Promise<{ config: Config; log: Logger; runtime: Runtime }> => {
  let config: Config;
  try {
    config = loadConfig(Deno.env.toObject());
  } catch (err) {
    if (err instanceof ConfigError) {
      console.error(err.message);
      Deno.exit(2);
    }
    throw err;
  }
  const log = createLogger(config.logLevel === "info" ? "warn" : config.logLevel, {
    write: (line: string) => Deno.stderr.writeSync(new TextEncoder().encode(line)),
  });
  const runtime = await openRuntime(config, log, { workers: false });
  return { config, log, runtime };
};

/** A one-line progress bar on stderr (redrawn in place on a terminal). */
export const progressBar = (label: string) => {
  const tty = Deno.stderr.isTerminal();
  const enc = new TextEncoder();
  let lastPct = -1;
  return (done: number, total: number) => {
    const pct = total === 0 ? 100 : Math.floor((done / total) * 100);
    if (pct === lastPct && done !== total) return;
    lastPct = pct;
    const width = 30;
    const filled = Math.round((pct / 100) * width);
    const bar = `${label} [${"#".repeat(filled)}${
      "-".repeat(width - filled)
    }] ${pct}% ${done}/${total}`;
    Deno.stderr.writeSync(enc.encode(tty ? `\r${bar}` : `${bar}\n`));
    if (tty && done >= total) Deno.stderr.writeSync(enc.encode("\n"));
  };
};
