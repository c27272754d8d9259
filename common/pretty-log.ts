/**
 * Logs as people read them: pino-pretty for a terminal, beside the JSON that files and tools get.
 * Not part of common/client.ts: the SDK never loads it.
 */
import { pino } from "pino";
import { prettyFactory, default as pretty } from "pino-pretty";

const IGNORE = "pid,hostname";

/**
 * The foreground agent's log: JSON lines appended to `logFile` (what `fabric-endpoint logs`
 * and tools read), and the same records, pretty, on stderr (a terminal).
 */
export function foregroundStream(logFile: string, level: string): pino.DestinationStream {
  return pino.multistream([
    {
      level: level as pino.Level,
      stream: pino.destination({ dest: logFile, append: true, sync: false, mkdir: true }),
    },
    {
      level: level as pino.Level,
      stream: pretty({ destination: 2, colorize: true, translateTime: "SYS:HH:MM:ss.l", ignore: IGNORE }),
    },
  ]);
}

/** Formats JSON log lines for people (a line that is not a pino record passes unchanged). */
export function prettyLines(colorize: boolean): (line: string) => string {
  const format = prettyFactory({ colorize, translateTime: "SYS:yyyy-mm-dd HH:MM:ss.l", ignore: IGNORE });
  return (line) => {
    if (!line.startsWith("{")) return `${line}\n`;
    try {
      return format(line);
    } catch {
      return `${line}\n`;
    }
  };
}
