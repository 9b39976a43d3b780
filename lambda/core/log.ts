/**
 * Structured JSON logging. One line per event with the request id and outcome; callers pass fields, never a
 * raw key or provider secret (the key id and display prefix are what identify a key in logs).
 */
export type LogLevel = 'debug' | 'info' | 'warn' | 'error';

export interface Logger {
  log(level: LogLevel, message: string, fields?: Readonly<Record<string, unknown>>): void;
}

const ORDER: Readonly<Record<LogLevel, number>> = { debug: 10, info: 20, warn: 30, error: 40 };

/** Writes JSON lines to a sink (stdout by default) at or above `level`. */
export function jsonLogger(options: { level?: LogLevel; sink?: (line: string) => void } = {}): Logger {
  const min = ORDER[options.level ?? 'info'];
  const sink = options.sink ?? ((line: string) => process.stdout.write(`${line}\n`));
  return {
    log(level, message, fields) {
      if (ORDER[level] < min) return;
      sink(JSON.stringify({ level, time: new Date().toISOString(), message, ...fields }));
    },
  };
}

export const silentLogger: Logger = { log: () => undefined };
