/**
 * Structured JSON logging. One line per event with the request id and outcome; callers pass fields, never a
 * raw key or provider secret (the key id and display prefix are what identify a key in logs). As a second
 * line of defence every logger here runs its fields through {@link redactSecrets} before writing them.
 *
 * Two implementations of one {@link Logger} interface: {@link jsonLogger} (plain JSON lines to a sink: the
 * local server and tests) and {@link powertoolsLogger} (Powertools for AWS Lambda Logger: the Lambda
 * functions, whose lines CloudWatch Logs Insights discovers field by field).
 */
import { Logger as PowertoolsLogger } from '@aws-lambda-powertools/logger';

export type LogLevel = 'debug' | 'info' | 'warn' | 'error';

export interface Logger {
  log(level: LogLevel, message: string, fields?: Readonly<Record<string, unknown>>): void;
}

const ORDER: Readonly<Record<LogLevel, number>> = { debug: 10, info: 20, warn: 30, error: 40 };

/** What replaces a secret in a log line. */
export const REDACTED = '[redacted]';

/** Field names whose values are secrets whatever they look like. */
const SECRET_FIELD = /^(authorization|proxy-authorization|x-api-key|api[-_]?key|secret|.*[-_]secret|.*Secret|password|pepper|keyPepper|rawKey|raw|adminToken|token|cookie|set-cookie)$/i;
/** Values that look like an API key (tollgate `sk-tg-…`, OpenAI `sk-…`/`sk-proj-…`, Anthropic `sk-ant-…`) or a bearer credential. */
const SECRET_VALUE = /\b(sk-[A-Za-z0-9_-]{8,}|tga-[A-Za-z0-9_-]{8,})|Bearer\s+\S+/g;

/**
 * Returns `value` with secrets replaced by {@link REDACTED}: the values of fields named like a credential
 * (`authorization`, `apiKey`, `pepper`, …), and anything inside a string that looks like an API key or a
 * bearer token. Objects and arrays are copied, never mutated; depth is bounded.
 */
export function redactSecrets<T>(value: T, depth = 0): T {
  if (typeof value === 'string') return value.replace(SECRET_VALUE, REDACTED) as T;
  if (depth > 6 || value === null || typeof value !== 'object') return value;
  if (Array.isArray(value)) return value.map((v) => redactSecrets(v, depth + 1)) as T;
  if (value instanceof Error) return redactSecrets({ name: value.name, message: value.message }, depth + 1) as T;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value as Record<string, unknown>)) {
    out[k] = SECRET_FIELD.test(k) && v !== undefined && v !== null ? REDACTED : redactSecrets(v, depth + 1);
  }
  return out as T;
}

/** Writes JSON lines to a sink (stdout by default) at or above `level`. */
export function jsonLogger(options: { level?: LogLevel; sink?: (line: string) => void } = {}): Logger {
  const min = ORDER[options.level ?? 'info'];
  const sink = options.sink ?? ((line: string) => process.stdout.write(`${line}\n`));
  return {
    log(level, message, fields) {
      if (ORDER[level] < min) return;
      sink(JSON.stringify({ level, time: new Date().toISOString(), message: redactSecrets(message), ...redactSecrets(fields) }));
    },
  };
}

export interface PowertoolsLoggerOptions {
  /** The `service` key of every line. */
  readonly serviceName: string;
  /**
   * Lines below this level are dropped.
   * @default 'info'
   */
  readonly level?: LogLevel;
  /**
   * Keys added to every line (e.g. the stage).
   * @default {}
   */
  readonly persistentKeys?: Readonly<Record<string, string>>;
}

/**
 * A {@link Logger} backed by Powertools for AWS Lambda Logger: JSON lines with `level`, `message`, `service`,
 * `timestamp` and (after {@link PowertoolsLoggerHandle.powertools}`.addContext`) the Lambda request id and
 * cold-start flag, plus the caller's fields, redacted.
 */
export interface PowertoolsLoggerHandle extends Logger {
  /** The underlying Powertools logger, for `addContext` in a handler. */
  readonly powertools: PowertoolsLogger;
}

export function powertoolsLogger(options: PowertoolsLoggerOptions): PowertoolsLoggerHandle {
  const powertools = new PowertoolsLogger({
    serviceName: options.serviceName,
    logLevel: (options.level ?? 'info').toUpperCase() as 'INFO',
    persistentKeys: { ...options.persistentKeys },
  });
  return {
    powertools,
    log(level, message, fields) {
      const text = redactSecrets(message);
      const extra = fields ? redactSecrets({ ...fields }) : undefined;
      if (extra) powertools[level](text, extra);
      else powertools[level](text);
    },
  };
}

export const silentLogger: Logger = { log: () => undefined };
