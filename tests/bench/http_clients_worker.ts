/**
 * The HTTP clients of the benchmark, in a Web Worker: a thread and an isolate
 * of their own, so that building requests and parsing answers does not run on
 * the event loop of the server they measure (http_clients.ts starts it).
 *
 * Each message runs one phase: `reqs` fetched from `base` by `clients`
 * concurrent loops (runRequests, as in process), timed here, answered with
 * the phase's timings and errors. One Deno.HttpClient per server, kept for
 * the worker's life: connections stay open (keep-alive) across phases, as a
 * long-running client's would.
 */
/// <reference lib="deno.worker" />
import { type BenchRequest, type Phase, runRequests } from "./stats.ts";

export interface PhaseMessage {
  id: number;
  base: string;
  headers: Record<string, string>;
  reqs: BenchRequest[];
  clients: number;
}
export type PhaseAnswer = { id: number; phase: Phase } | { id: number; error: string };

const httpClients = new Map<string, Deno.HttpClient>();

self.onmessage = async (e: MessageEvent<PhaseMessage>) => {
  const { id, base, headers, reqs, clients } = e.data;
  try {
    let client = httpClients.get(base);
    if (!client) {
      // HTTP/1.1, as the reference figure was measured; an idle pool as big as the loops
      client = Deno.createHttpClient({ http2: false, poolMaxIdlePerHost: Math.max(clients, 64) });
      httpClients.set(base, client);
    }
    const phase = await runRequests(
      (path) => fetch(base + path, { headers, client }),
      reqs,
      clients,
    );
    self.postMessage({ id, phase } satisfies PhaseAnswer);
  } catch (err) {
    self.postMessage({ id, error: String(err) } satisfies PhaseAnswer);
  }
};
