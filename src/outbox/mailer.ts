// @ts-types="@types/nodemailer"
import nodemailer from "nodemailer";

/** One plain-text message. */
export interface Mail {
  to: string;
  subject: string;
  text: string;
}

/** Where the outbox's e-mails go. */
export interface Mailer {
  send(mail: Mail): Promise<void>;
  close(): void;
}

/**
 * A mailer over SMTP (nodemailer), from `CHARTLOG_SMTP_URL`
 * (`smtp://user:pass@host:587`, `smtps://host:465`; nodemailer's own query
 * options such as `?tls.rejectUnauthorized=false` are read from it too).
 * Bounded timeouts: an SMTP server that stalls fails the attempt (and the
 * outbox retries later) instead of holding the delivery worker.
 *
 * @example
 * const mailer = smtpMailer("smtp://mail.example:587", "Chartlog <no-reply@clinic.example>");
 * await mailer.send({ to: "pat@example.org", subject: "…", text: "…" });
 */
export const smtpMailer = (
  url: string,
  from: string,
  opts: { timeoutMs?: number } = {},
): Mailer => {
  const timeout = opts.timeoutMs ?? 30_000;
  const transport = nodemailer.createTransport(url, {
    from,
    connectionTimeout: timeout,
    greetingTimeout: timeout,
    socketTimeout: timeout,
    // nodemailer would otherwise log envelopes (addresses) at its own discretion
    logger: false,
    debug: false,
  });
  return {
    send: async (mail) => {
      await transport.sendMail({ from, to: mail.to, subject: mail.subject, text: mail.text });
    },
    close: () => transport.close(),
  };
};

/**
 * A short class for a failed send, safe for the log and the event: the
 * error's code (nodemailer's `ECONNECTION`, `EAUTH`, …) or the SMTP reply
 * code, never its message, which can quote an address or the server's text.
 */
export const sendErrorClass = (err: unknown): string => {
  const e = err as { code?: unknown; responseCode?: unknown };
  if (typeof e?.responseCode === "number") return `smtp_${e.responseCode}`;
  if (typeof e?.code === "string") {
    const code = e.code.toLowerCase().replace(/[^a-z0-9_]/g, "_").slice(0, 40);
    if (code) return `smtp_${code}`;
  }
  return "smtp_error";
};
