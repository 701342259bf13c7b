/**
 * Over-real-HTTP plumbing for the benchmark: serving a Hono app on the
 * loopback as `deno task start` serves it (Deno.serve handing each request
 * to `app.fetch` with its connection info), and driving it with keep-alive
 * clients that run off the server's thread (http_clients_worker.ts).
 * Both register their cleanup with the section's `defer`.
 */
import type { PhaseAnswer, PhaseMessage } from "./http_clients_worker.ts";
import type { BenchRequest, Phase, SectionDeps } from "./stats.ts";

export interface LoopbackServer {
  /** `http://127.0.0.1:<port>`, no trailing slash. */
  url: string;
  /** Distinct client connections seen so far: about the client count when keep-alive works. */
  connections: () => number;
}

/**
 * Serves `fetchApp` on 127.0.0.1, on a port of the system's choosing, until
 * the enclosing scope ends (the server is then aborted: every connection
 * closes, whether or not a client still holds it).
 */
export const serveOnLoopback = async (
  deps: SectionDeps,
  label: string,
  fetchApp: (
    req: Request,
    info: Deno.ServeHandlerInfo<Deno.NetAddr>,
  ) => Response | Promise<Response>,
): Promise<LoopbackServer> => {
  const abort = new AbortController();
  const seen = new Set<number>();
  let listening!: (addr: Deno.NetAddr) => void;
  const addr = new Promise<Deno.NetAddr>((r) => listening = r);
  const server = Deno.serve({
    hostname: "127.0.0.1",
    port: 0,
    signal: abort.signal,
    onListen: listening,
  }, (req, info) => {
    seen.add(info.remoteAddr.port);
    // as src/main.ts: `info` is Hono's env, where getConnInfo finds the client address
    return fetchApp(req, info);
  });
  deps.defer(`stop ${label} HTTP server`, async () => {
    abort.abort();
    await server.finished;
  });
  const { port } = await addr;
  return { url: `http://127.0.0.1:${port}`, connections: () => seen.size };
};

export interface HttpClients {
  /** `reqs` to `base` by `clients` concurrent keep-alive loops in the worker, timed there. */
  run: (
    base: string,
    headers: Record<string, string>,
    reqs: readonly BenchRequest[],
    clients: number,
  ) => Promise<Phase>;
}

/** Starts the clients' worker; it is terminated when the enclosing scope ends. */
export const openHttpClients = (deps: SectionDeps): HttpClients => {
  const worker = new Worker(new URL("./http_clients_worker.ts", import.meta.url).href, {
    type: "module",
  });
  const waiting = new Map<number, { resolve: (p: Phase) => void; reject: (e: Error) => void }>();
  const failAll = (err: Error) => {
    for (const w of waiting.values()) w.reject(err);
    waiting.clear();
  };
  worker.onmessage = (e: MessageEvent<PhaseAnswer>) => {
    const w = waiting.get(e.data.id);
    if (!w) return;
    waiting.delete(e.data.id);
    if ("error" in e.data) w.reject(new Error(`HTTP clients: ${e.data.error}`));
    else w.resolve(e.data.phase);
  };
  worker.onerror = (e) => {
    // handled here: an error event left unhandled would end the benchmark without its cleanups
    e.preventDefault();
    failAll(new Error(`HTTP clients' worker failed: ${e.message}`));
  };
  deps.defer("terminate HTTP clients' worker", () => {
    worker.terminate();
    failAll(new Error("HTTP clients' worker terminated"));
    return Promise.resolve();
  });
  let nextId = 0;
  return {
    run: (base, headers, reqs, clients) =>
      new Promise<Phase>((resolve, reject) => {
        const id = nextId++;
        waiting.set(id, { resolve, reject });
        worker.postMessage({ id, base, headers, reqs: [...reqs], clients } satisfies PhaseMessage);
      }),
  };
};
