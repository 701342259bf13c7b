/**
 * What a graceful shutdown waits for. Deno's `server.shutdown()` stops
 * accepting connections and lets handlers finish, but it cuts off request
 * bodies still arriving (the handler reads "Cannot read body as underlying
 * resource unavailable"), and it resolves before they have answered. So on
 * SIGTERM the server first refuses new requests (503, `Connection: close`),
 * waits until no request is still receiving its body, then shuts the
 * listener, and closes the database only once every response is delivered.
 */
export class Drain {
  #receiving = 0;
  #idle: (() => void)[] = [];
  #handling = 0;
  #done: (() => void)[] = [];
  /** Set on SIGTERM: new requests are refused. */
  draining = false;

  /** Runs `fn` while counting a request body as still arriving. */
  async receiving<T>(fn: () => Promise<T>): Promise<T> {
    this.#receiving++;
    try {
      return await fn();
    } finally {
      if (--this.#receiving === 0) { for (const resolve of this.#idle.splice(0)) resolve(); }
    }
  }

  /** Counts a request as in flight until `delivered` settles (its response is sent or failed). */
  track(delivered: Promise<unknown>): void {
    this.#handling++;
    delivered.catch(() => {}).finally(() => {
      if (--this.#handling === 0) { for (const resolve of this.#done.splice(0)) resolve(); }
    });
  }

  /** Resolves once every tracked request has its response delivered. */
  whenDelivered(): Promise<void> {
    return this.#handling === 0
      ? Promise.resolve()
      : new Promise((resolve) => this.#done.push(resolve));
  }

  /** Resolves once no request body is arriving. */
  whenReceived(): Promise<void> {
    return this.#receiving === 0
      ? Promise.resolve()
      : new Promise((resolve) => this.#idle.push(resolve));
  }
}
