import { pino, type Logger } from "pino";

export type { Logger };

/**
 * Creates the root logger of a process. Components take a child:
 * `log.child({ component: "endpoint.provider.local" })`.
 * Level from `FABRIC_LOG_LEVEL` (default "info"); `silent` turns it off.
 */
export function createLogger(
  name: string,
  options: {
    level?: string;
    destination?: number | string;
    /** Where to write instead of `destination` (see pretty-log.ts's foregroundStream). */
    stream?: pino.DestinationStream;
  } = {},
): Logger {
  const level = options.level ?? process.env["FABRIC_LOG_LEVEL"] ?? "info";
  const dest = options.destination ?? 2;
  return pino(
    {
      name,
      level,
      base: { pid: process.pid },
      redact: {
        paths: [
          "token",
          "*.token",
          "authorization",
          "*.authorization",
          "endpointToken",
          "*.endpointToken",
          "seed",
          "*.seed",
          "userJwt",
          "*.userJwt",
          "userSeed",
          "*.userSeed",
          "bus.userJwt",
          "bus.userSeed",
          "*.bus.userJwt",
          "*.bus.userSeed",
          "messageKey",
          "*.messageKey",
          "bus.messageKey",
          "*.bus.messageKey",
        ],
        censor: "[redacted]",
      },
    },
    options.stream ?? pino.destination({ dest, sync: false }),
  );
}

/** A logger that drops everything (the SDK's default). */
export const silentLogger: Logger = pino({ level: "silent" });
