// @ts-types="@types/smtp-server"
import { SMTPServer } from "smtp-server";

/** A message as the test SMTP server received it. */
export interface Received {
  from: string;
  to: string[];
  raw: string;
}

/**
 * A real SMTP server in process (npm smtp-server), plain and without
 * authentication, that keeps every message it accepts. `stop()` closes the
 * port (a client then fails to connect) and `start()` opens the same port
 * again, so a test can take the mail server down and bring it back.
 */
export class TestSmtp {
  readonly received: Received[] = [];
  #server: SMTPServer | null = null;
  port = 0;

  get url(): string {
    return `smtp://127.0.0.1:${this.port}`;
  }

  async start(): Promise<this> {
    const server = new SMTPServer({
      authOptional: true,
      disabledCommands: ["STARTTLS", "AUTH"],
      logger: false,
      onData: (stream, session, callback) => {
        const chunks: Uint8Array[] = [];
        stream.on("data", (c: Uint8Array) => chunks.push(c));
        stream.on("end", () => {
          const raw = new TextDecoder().decode(
            chunks.reduce((a, b) => {
              const out = new Uint8Array(a.length + b.length);
              out.set(a);
              out.set(b, a.length);
              return out;
            }, new Uint8Array()),
          );
          const from = session.envelope.mailFrom;
          this.received.push({
            from: from ? from.address : "",
            to: session.envelope.rcptTo.map((r) => r.address),
            raw,
          });
          callback();
        });
      },
    });
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(this.port, "127.0.0.1", () => resolve());
    });
    this.port = (server.server.address() as { port: number }).port;
    this.#server = server;
    return this;
  }

  async stop(): Promise<void> {
    const server = this.#server;
    this.#server = null;
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
  }
}
