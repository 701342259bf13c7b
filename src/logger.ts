import pino from "pino";

/**
 * Paths redacted from every log line. Logs should carry ids and enums only;
 * this list is the safety net for a payload or header that slips in.
 */
export const REDACT_PATHS = [
  "req.headers.authorization",
  "req.headers.cookie",
  'res.headers["set-cookie"]',
  "password",
  "*.password",
  "token",
  "*.token",
  "accessToken",
  "refreshToken",
  "*.refreshToken",
  "otp",
  "*.otp",
  "code",
  "data",
  "*.data",
  "body",
  "*.body",
  "query",
  "*.query",
  "firstName",
  "lastName",
  "middleName",
  "*.firstName",
  "*.lastName",
  "dateOfBirth",
  "*.dateOfBirth",
  "email",
  "*.email",
  "phone",
  "*.phone",
  "notes",
  "*.notes",
];

export type Logger = pino.Logger;

/** A JSON logger writing to `destination` (stdout by default). */
export const createLogger = (
  level: string,
  destination?: pino.DestinationStream,
): Logger =>
  pino({
    level,
    base: { service: "chartlog" },
    redact: { paths: REDACT_PATHS, censor: "[redacted]" },
    timestamp: pino.stdTimeFunctions.isoTime,
  }, destination ?? pino.destination({ fd: 1, sync: true }));
