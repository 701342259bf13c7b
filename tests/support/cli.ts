/** Runs a `src/cli` entry point as `deno task` would, with the given environment. */
export const runCli = async (
  script: string,
  args: string[],
  env: Record<string, string>,
): Promise<{ code: number; stdout: string; stderr: string }> => {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", new URL(`../../src/cli/${script}`, import.meta.url).pathname, ...args],
    env: { LOG_LEVEL: "warn", ...env },
    stdout: "piped",
    stderr: "piped",
    // a guard against a hang only: a CLI that waits forever is killed and fails
    signal: AbortSignal.timeout(120_000),
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
};

/** Base64 of a 32-byte key, as CHARTLOG_MASTER_KEY takes it. */
export const keyEnv = (key: Uint8Array): string => btoa(String.fromCharCode(...key));
