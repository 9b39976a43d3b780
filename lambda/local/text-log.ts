/**
 * `npm start`'s default log: one readable line per request (`21:03:12 POST /v1/chat/completions
 * mock/gpt-4o-mini 200 12ms $0.000004 key I78pDBKen5B8`), and other events as `time level message k=v …`.
 * `--log-format json` (or TOLLGATE_LOG_FORMAT=json) keeps the JSON lines of {@link jsonLogger}. Secrets are
 * redacted the same way in both.
 */
import { type Logger, type LogLevel, redactSecrets } from '../core/log';
import { humanUsd } from '../core/money';
import { REQUEST_LOG_MESSAGE } from '../observability/request-log';

const ORDER: Readonly<Record<LogLevel, number>> = { debug: 10, info: 20, warn: 30, error: 40 };

/** Messages the request line already says (one line per request, not two). */
const FOLDED = new Set(['request settled']);

const pad = (n: number) => String(n).padStart(2, '0');
const clock = (d: Date) => `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;

function value(v: unknown): string {
  if (typeof v === 'string') return /\s/.test(v) ? JSON.stringify(v) : v;
  return typeof v === 'object' && v !== null ? JSON.stringify(v) : String(v);
}

/**
 * The request line: method path model status ms cost key, then for a refusal its reason, the scope that refused
 * (with the budget's window) and the error code the caller got (`refused: budget user:ana/day (insufficient_quota)`),
 * for any other failure the error code (`failed: upstream_error`).
 */
export function requestLine(f: Readonly<Record<string, unknown>>, at: Date): string {
  const cost = typeof f.costMicros === 'number' ? `${humanUsd(f.costMicros)}${f.costEstimated ? ' (est.)' : ''}` : '-';
  const code = typeof f.errorCode === 'string' ? f.errorCode : typeof f.errorKind === 'string' ? f.errorKind : undefined;
  let why: string | undefined;
  if (typeof f.refusalReason === 'string') {
    const scope = typeof f.refusalScope === 'string' && f.refusalScope !== '-' ? f.refusalScope : undefined;
    const where = scope ? ` ${scope}${typeof f.refusalWindow === 'string' ? `/${f.refusalWindow}` : ''}` : '';
    why = `refused: ${f.refusalReason}${where}${code && code !== f.refusalReason ? ` (${code})` : ''}`;
  } else if (code) {
    why = `failed: ${code}`;
  }
  const who = typeof f.keyId === 'string' ? `key ${f.keyId}${typeof f.userId === 'string' ? ` (${f.userId})` : ''}` : 'no key';
  return [
    clock(at),
    String(f.method ?? ''),
    String(f.path ?? ''),
    String(f.model ?? '-'),
    String(f.status ?? ''),
    `${typeof f.durationMs === 'number' ? Math.round(f.durationMs) : '?'}ms`,
    cost,
    who,
    ...(why ? [why] : []),
    ...(f.outcome && f.outcome !== 'ok' && f.outcome !== 'rejected' ? [`(${String(f.outcome)})`] : []),
  ].join(' ');
}

export function textLogger(options: { level?: LogLevel; sink?: (line: string) => void } = {}): Logger {
  const min = ORDER[options.level ?? 'info'];
  const sink = options.sink ?? ((line: string) => process.stdout.write(`${line}\n`));
  return {
    log(level, message, fields) {
      if (ORDER[level] < min) return;
      if (level === 'info' && FOLDED.has(message)) return;
      const f = redactSecrets(fields ?? {});
      const at = new Date();
      if (message === REQUEST_LOG_MESSAGE) {
        sink(requestLine(f, at));
        return;
      }
      const rest = Object.entries(f)
        .filter(([, v]) => v !== undefined)
        .map(([k, v]) => `${k}=${value(v)}`)
        .join(' ');
      sink(`${clock(at)} ${level.padEnd(5)} ${redactSecrets(message)}${rest ? `  ${rest}` : ''}`);
    },
  };
}
